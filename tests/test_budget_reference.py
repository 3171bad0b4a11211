"""Budgets stated on a local model (``reference=PATH``): the solve uses that model's own depth and widths."""

from __future__ import annotations

import pytest
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

import tokenprune
from tokenprune.budget import Budget, flops_share
from tokenprune.cost import ModelDims, stack_flops

VISUAL, LAYERS, D, M = 100, 6, 64, 128


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("shallow-llava")
    text = LlamaConfig(hidden_size=D, intermediate_size=M, num_hidden_layers=LAYERS, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=64)  # fmt: skip
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=60, patch_size=6)  # fmt: skip
    LlavaConfig(vision_config=vision, text_config=text, image_seq_length=VISUAL).save_pretrained(path)
    return path


def _planned_share(strategy) -> float:
    """FLOPs share of the integer plan the engine runs on the 6-layer model (one sample of 100 tokens)."""
    tokens = [t[0] for t in strategy.scheduler.plan(LAYERS, [VISUAL]).tokens_per_layer()]
    return stack_flops(tokens, D, M) / stack_flops([VISUAL] * LAYERS, D, M)


def test_model_dims_load_a_directory_and_a_config_file(model_dir):
    for where in (model_dir, model_dir / "config.json"):
        dims = ModelDims.load(str(where))
        assert (dims.num_layers, dims.hidden_size, dims.intermediate_size, dims.visual_tokens) == (LAYERS, D, M, VISUAL)
    assert ModelDims.load("llava-1.5-7b").num_layers == 32


@pytest.mark.parametrize(
    "name, options",
    [("pyramiddrop", {}), ("pyramiddrop", {"layer_list": [1, 3]}), ("fastv", {"k": 1}), ("dart", {"layer": 1}),
     ("random", {"layer": 1}), ("sparsevlm", {"layer_list": [1, 2, 4]})],
)  # fmt: skip
@pytest.mark.parametrize("share", [0.25, 0.5, 0.8])
def test_flops_budget_holds_on_the_referenced_model(model_dir, name, options, share):
    strategy = tokenprune.get_registry().build(name, budget_flops=share, reference=str(model_dir), **options)
    # int() truncation of the kept counts costs at most one token per layer: < 1% of 100 tokens
    assert _planned_share(strategy) == pytest.approx(share, abs=0.012)


def test_the_default_reference_misses_the_budget_on_a_shallow_model(model_dir):
    on_preset = tokenprune.get_registry().build("pyramiddrop", budget_flops=0.25)
    on_model = tokenprune.get_registry().build("pyramiddrop", budget_flops=0.25, reference=str(model_dir))
    assert _planned_share(on_model) == pytest.approx(0.25, abs=0.012)
    assert _planned_share(on_preset) < 0.2  # λ solved for 32 layers keeps nothing after layer 1 of 6
    assert on_preset.config.ratios() != on_model.config.ratios()


def test_a_budget_out_of_reach_on_the_model_names_the_range(model_dir):
    with pytest.raises(ValueError, match=r"out of reach.*spans 0\.3333 to 1"):
        tokenprune.get_registry().build("fastv", budget_flops=0.25, reference=str(model_dir))  # K=2: 2 of 6 dense


@pytest.mark.parametrize(
    "reference, message",
    [("no-such-preset-or-path", "neither a model preset"), ("{tmp}", "has no config.json")],
)
def test_bad_references_are_clear_errors(tmp_path, reference, message):
    with pytest.raises(ValueError, match=message):
        tokenprune.get_registry().build("pyramiddrop", budget_flops=0.5, reference=reference.format(tmp=tmp_path))


def test_budget_dims_are_read_once(model_dir):
    a, b = Budget(flops=0.5, reference=str(model_dir)), Budget(flops=0.3, reference=str(model_dir))
    assert a.dims is b.dims  # cached: the bisection measures a schedule hundreds of times
    assert flops_share([2], [0.5], a.dims, VISUAL) == pytest.approx(
        stack_flops([VISUAL] * 2 + [VISUAL / 2] * 4, D, M) / stack_flops([VISUAL] * 6, D, M)
    )
