"""Every user error the API can meet, table-driven: the exception type, and a message that names
the problem AND the fix (tokenprune/errors.py: "Every error names the problem and the fix").

Each row is ``(id, callable, exception type, problem regex, fix regex)``. Wrap-time rows also check
that a failed `wrap` attached nothing (no handle, no hooks, loss function untouched); call-time
rows check that the wrapped model still serves a valid call afterwards.

Choice documented here: wrapping an already wrapped model raises `AlreadyWrappedError` (and keeps
the first wrap untouched) instead of replacing the strategy or stacking a second set of hooks, so
that a model's configuration can never change silently; `unwrap` first to change it.

Plus two inputs that are not errors: a model cast to another dtype after `wrap`, and
``inputs_embeds`` without ``input_ids``.
"""

from __future__ import annotations

import copy

import re
import types
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import tiny_models as tm
import tiny_models_qwen_internvl as tmq
import torch
from pydantic import ValidationError
from torch import nn
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, StaticCache

import tokenprune
from tokenprune import (
    AlreadyWrappedError,
    NotWrappedError,
    ScheduleError,
    UnknownStrategyError,
    UnsupportedFeatureError,
    UnsupportedModelError,
)
from tokenprune.components import QueryAttentionScorer, StageScheduler, TopKDrop
from tokenprune.interfaces import Strategy

F32, F64 = torch.float32, torch.float64


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------
def hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_pre_hooks) + len(m._forward_hooks) + len(m._forward_pre_hooks_with_kwargs)
        for m in model.modules()
    )


def llava32():
    return tm.make_llava(dtype=F32)


def at_wrap(factory: Callable[[], nn.Module], strategy="pyramiddrop", /, **options) -> Callable[[], None]:
    """A call of `wrap` on a fresh model that must fail and leave the model exactly as it was."""

    def call():
        model = factory()
        hooks = hook_count(model) if isinstance(model, nn.Module) else 0
        try:
            tokenprune.wrap(model, strategy, **options)
        except Exception:
            assert not hasattr(model, "tokenprune"), "a failed wrap left a handle"
            if isinstance(model, nn.Module):
                assert hook_count(model) == hooks, "a failed wrap left hooks"
                assert "_loss_function" not in model.__dict__
            raise

    return call


def at_call(setup: Callable[[], tuple[nn.Module, dict, dict]]) -> Callable[[], None]:
    """``setup() -> (wrapped model, bad call kwargs, good call kwargs)``: the bad call must fail,
    then the good one must run pruned on the same wrapped model."""

    def call():
        model, bad, good = setup()
        try:
            with torch.no_grad():
                model(**bad)
        except Exception:
            with torch.no_grad():
                out = model(**good)
            assert out.logits.shape[1] < good["input_ids"].shape[1], "the model no longer prunes"
            raise

    return call


def tiny_llama() -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2)
    return LlamaForCausalLM(config)


def remote_internvl() -> nn.Module:
    """Stands in for a trust_remote_code InternVL (``model_type="internvl_chat"``; no download)."""
    model = nn.Module()
    model.config = types.SimpleNamespace(model_type="internvl_chat")
    return model


def flex_after_wrap():
    model = tokenprune.wrap(llava32())
    inputs = tm.llava_inputs(model)
    model.config.text_config._attn_implementation = "flex_attention"
    try:
        model(**inputs)
    finally:
        model.config.text_config._attn_implementation = "sdpa"
        assert model(**inputs).logits.shape[1] == 11  # back to SDPA: prunes again


def sliding_window_cache_at_call():
    """A cache whose layers crop by count: a reduced layer's oldest tokens are not layer 0's."""
    model = tokenprune.wrap(llava32())
    inputs = tm.llava_inputs(model)
    config = copy.deepcopy(model.config.text_config)
    config.layer_types, config.sliding_window = ["sliding_attention"] * config.num_hidden_layers, 8
    return model, {**inputs, "cache": DynamicCache(config=config), "use_cache": True}, inputs


def static_cache_with_flash():
    """flash attention reads a 2-D mask; a static cache's reduced layers need 4-D masks over their slots."""
    model = tokenprune.wrap(llava32())
    inputs = tm.llava_inputs(model)
    cache = StaticCache(config=model.config, max_cache_len=64)
    model.config.text_config._attn_implementation = "flash_attention_2"
    try:
        model(**inputs, cache=cache, use_cache=True)
    finally:
        model.config.text_config._attn_implementation = "sdpa"


def images_in_a_fullgraph_compile():
    """The prefill is planned on the host: a fullgraph compile of the whole VLM cannot hold it."""
    model = tokenprune.wrap(llava32())
    inputs = tm.llava_inputs(model)
    model.compile(fullgraph=True, backend="eager")
    try:
        model(**inputs)
    except Exception as exc:  # dynamo wraps the error raised inside the trace; its text carries ours
        raise UnsupportedFeatureError(str(exc)) from exc
    finally:
        model._compiled_call_impl = None


def tensor_logits_to_keep():
    model = tokenprune.wrap(llava32())
    inputs = tm.llava_inputs(model)
    last = torch.tensor([inputs["input_ids"].shape[1] - 1])
    return model, {**inputs, "logits_to_keep": last}, inputs


def images_on_a_filled_cache():
    model = tokenprune.wrap(llava32())
    first = tm.llava_inputs(model)
    with torch.no_grad():
        cache = model(**first, use_cache=True).past_key_values
    assert isinstance(cache, DynamicCache)
    more = tm.llava_inputs(model, seed=1)
    past = first["input_ids"].shape[1]
    bad = {
        "input_ids": more["input_ids"],
        "pixel_values": more["pixel_values"],
        "attention_mask": torch.ones(1, past + more["input_ids"].shape[1], dtype=torch.long),
        "past_key_values": cache,
        "use_cache": True,
    }
    return model, bad, first


def neither_ids_nor_embeds():
    model = tokenprune.wrap(llava32())
    inputs = tm.llava_inputs(model)
    return model, {"pixel_values": inputs["pixel_values"], "attention_mask": inputs["attention_mask"]}, inputs


def wrap_twice():
    model = tokenprune.wrap(llava32(), "pyramiddrop", ratio=0.5)
    first, hooks = model.tokenprune, hook_count(model)
    try:
        tokenprune.wrap(model, "pyramiddrop", ratio=0.25)
    finally:
        assert model.tokenprune is first and first.config.ratio == 0.5  # the first wrap is untouched
        assert hook_count(model) == hooks


def strategy_object():
    return Strategy(StageScheduler([2], [0.5]), QueryAttentionScorer(), TopKDrop())


# ----------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[], object]
    exc: type[BaseException]
    problem: str
    fix: str


CASES = [
    # -- strategy name / object ----------------------------------------------------------------
    Case("unknown strategy, close match", at_wrap(llava32, "pyramidrop"), UnknownStrategyError,
         r"Unknown strategy 'pyramidrop'\..*Known strategies: (\w+, )*pdrop, (\w+, )*pyramiddrop(, \w+)*\.", r"Did you mean 'pyramiddrop'\?"),
    Case("unknown strategy, no close match", at_wrap(llava32, "zzz"), UnknownStrategyError,
         r"Unknown strategy 'zzz'\. Known strategies: (\w+, )*pdrop, (\w+, )*pyramiddrop(, \w+)*\.", r"Run `tokenprune list`"),
    Case("strategy name in the wrong case", at_wrap(llava32, "PyramidDrop"), UnknownStrategyError,
         r"Unknown strategy 'PyramidDrop'\.", r"Did you mean 'pyramiddrop'\?"),
    Case("options with a Strategy object", at_wrap(llava32, strategy_object(), ratio=0.5), TypeError,
         r"Options \['ratio'\] were given with a Strategy object",
         r"options configure a strategy by name only \(e\.g\. wrap\(model, 'pyramiddrop', ratio=0\.5\)\)"),
    Case("strategy neither a name nor a Strategy", at_wrap(llava32, 42), TypeError,
         r"got int\.", r"strategy must be a registered name or a tokenprune\.Strategy"),
    Case("strategy None", at_wrap(llava32, None), TypeError,
         r"got NoneType\.", r"strategy must be a registered name or a tokenprune\.Strategy"),
    # -- model ----------------------------------------------------------------------------------
    Case("unsupported model", at_wrap(tiny_llama), UnsupportedModelError,
         r"No tokenprune adapter supports LlamaForCausalLM \(model_type='llama'\)\. Supported model types: "
         r"internvl, llava, llava_next, llava_onevision, qwen2_5_vl, qwen2_vl, qwen3_vl\.",
         r"Wrap the full \*ForConditionalGeneration model, or register an adapter"),
    Case("not a transformers model", at_wrap(lambda: nn.Linear(2, 2)), UnsupportedModelError,
         r"No tokenprune adapter supports Linear\. Supported model types: .*llava", r"register an adapter"),
    Case("only the text stack", at_wrap(lambda: llava32().model.language_model), UnsupportedModelError,
         r"No tokenprune adapter supports LlamaModel", r"Wrap the full \*ForConditionalGeneration model"),
    Case("remote-code InternVL", at_wrap(remote_internvl), UnsupportedModelError,
         r"Remote-code InternVL \(trust_remote_code\) is not supported",
         r"load the HF-native '-hf' checkpoint .* with InternVLForConditionalGeneration"),
    Case("flex attention at wrap", at_wrap(lambda: tm.make_llava(attn="flex_attention", dtype=F32)),
         UnsupportedFeatureError, r"Flex attention is not supported yet", r"attn_implementation='sdpa'"),
    Case("flex attention switched on after wrap", flex_after_wrap, UnsupportedFeatureError,
         r"Flex attention is not supported yet", r"attn_implementation='sdpa'"),
    Case("sliding-window cache at call time", at_call(sliding_window_cache_at_call), UnsupportedFeatureError,
         r"DynamicCache with DynamicSlidingWindowLayer layers is not supported",
         r"Use the default DynamicCache or cache_implementation='static'"),
    Case("static cache with flash attention", static_cache_with_flash, UnsupportedFeatureError,
         r"A static cache with flash attention is not supported", r"Use attn_implementation='sdpa' with a static cache"),
    Case("images in a fullgraph compile of the whole model", images_in_a_fullgraph_compile, UnsupportedFeatureError,
         r"A forward with images ran inside torch.compile",
         r"compile the language model \(model.model.language_model\) or use generate's compiled decode"),
    Case("compact positions on Qwen (M-RoPE)", at_wrap(tmq.make_qwen2_vl, positions="compact"),
         UnsupportedFeatureError, r"positions='compact' is undefined for Qwen2VLForConditionalGeneration",
         r"Use positions='keep'"),
    Case("Qwen3-VL reduction before its deepstack layers", at_wrap(lambda: tmq.make_qwen3_vl(deepstack=3)),
         ScheduleError, r"Reduction at layer 2 is too early for Qwen3VLForConditionalGeneration",
         r"must be >= 3 \(its first 3 layers receive deepstack .*\)\. Move the first boundary later"),
    # -- wrap / unwrap --------------------------------------------------------------------------
    Case("wrap twice", wrap_twice, AlreadyWrappedError,
         r"already wrapped with 'pyramiddrop'", r"call tokenprune\.unwrap\(model\) first"),
    Case("unwrap of an unwrapped model", lambda: tokenprune.unwrap(llava32()), NotWrappedError,
         r"not wrapped by tokenprune", r"nothing to unwrap"),
    Case("handle of an unwrapped model", lambda: tokenprune.handle_of(llava32()), NotWrappedError,
         r"not wrapped by tokenprune", r"call tokenprune\.wrap\(model, \.\.\.\) first"),
    # -- call time ------------------------------------------------------------------------------
    Case("tensor logits_to_keep with images", at_call(tensor_logits_to_keep), UnsupportedFeatureError,
         r"A tensor-valued `logits_to_keep` indexes original positions",
         r"Pass an int \(e\.g\. logits_to_keep=1\) or unwrap the model"),
    Case("new images on a filled cache", at_call(images_on_a_filled_cache), UnsupportedFeatureError,
         r"Visual tokens arrived on a filled KV cache",
         r"pass the whole prompt at once, or unwrap the model for this call"),
    Case("images without input_ids or inputs_embeds", at_call(neither_ids_nor_embeds), ValueError,
         r"called with neither input_ids nor inputs_embeds", r"neither input_ids nor inputs_embeds"),
]

# -- options: every PyramidDropConfig constraint, and the ones only the model can check ----------
OPTION_CASES = [
    # (id, options, exception, problem, fix)
    ("layer out of range for the model", {"layer_list": [2, 4, 99]}, ScheduleError,
     r"Reduction layer 99 is out of range for a model with 8 decoder layers", r"every reduction layer must be in \[1, 7\]"),
    ("layer equal to the depth", {"layer_list": [2, 4, 8]}, ScheduleError,
     r"Reduction layer 8 is out of range for a model with 8 decoder layers", r"must be in \[1, 7\]"),
    ("too many stages for the depth", {"stages": 16}, ScheduleError,
     r"Reduction layer 0 is not allowed: layer 0 always sees every token", r"Use layers >= 1"),
    ("layer_list not increasing", {"layer_list": [4, 2, 6]}, ValidationError,
     r"layer_list=\[4, 2, 6\]", r"must be strictly increasing"),
    ("layer_list with a repeated layer", {"layer_list": [2, 2, 6]}, ValidationError,
     r"layer_list=\[2, 2, 6\]", r"must be strictly increasing"),
    ("drop at layer 0", {"layer_list": [0, 4, 6]}, ValidationError,
     r"a drop at layer 0 \(before the first layer\) is not allowed", r"entries are 1-based layers after which tokens drop"),
    ("layer_list of floats", {"layer_list": [2.5, 4, 6]}, ValidationError,
     r"layer_list\.0\s+Input should be a valid integer", r"valid integer"),
    ("ratio 0", {"ratio": 0.0}, ValidationError, r"ratio\s+Input should be greater than 0", r"greater than 0"),
    ("ratio above 1", {"ratio": 1.5}, ValidationError, r"ratio\s+Input should be less than or equal to 1", r"less than or equal to 1"),
    ("ratio negative", {"ratio": -0.1}, ValidationError, r"ratio\s+Input should be greater than 0", r"greater than 0"),
    ("ratio NaN", {"ratio": float("nan")}, ValidationError, r"ratio\s+Input should be", r"less than or equal to 1|greater than 0"),
    ("ratio not a number", {"ratio": "half"}, ValidationError, r"ratio\s+Input should be a valid number", r"valid number"),
    ("ratio list entry 0", {"image_token_ratio_list": [0.5, 0.25, 0.0]}, ValidationError,
     r"image_token_ratio_list=\[0\.5, 0\.25, 0\.0\]", r"every ratio must be in \(0, 1\]"),
    ("ratio list entry above 1", {"image_token_ratio_list": [1.5, 0.25, 0.125]}, ValidationError,
     r"image_token_ratio_list=\[1\.5, 0\.25, 0\.125\]", r"every ratio must be in \(0, 1\]"),
    ("increasing ratio list", {"image_token_ratio_list": [0.25, 0.5, 0.125]}, ValidationError,
     r"image_token_ratio_list=\[0\.25, 0\.5, 0\.125\] must not increase", r"cumulative w\.r\.t\. the original count"),
    ("ratio list shorter than layer_list", {"layer_list": [2, 4, 6], "image_token_ratio_list": [0.5, 0.25]},
     ValidationError, r"image_token_ratio_list has 2 entries for 3 stage boundaries", r"give one cumulative ratio per boundary"),
    ("reference code's leading 1.0", {"layer_list": [2, 4, 6], "image_token_ratio_list": [1.0, 0.5, 0.25, 0.125]},
     ValidationError, r"has 4 entries for 3 stage boundaries", r"without the leading 1\.0"),
    ("ratio list vs default stages", {"image_token_ratio_list": [0.5, 0.25]}, ValidationError,
     r"has 2 entries for 3 stage boundaries", r"give one cumulative ratio per boundary"),
    ("layer_list and layer_fractions", {"layer_list": [2, 4, 6], "layer_fractions": [0.25, 0.5, 0.75]},
     ValidationError, r"Give either layer_list \(absolute layers\) or layer_fractions", r"not both"),
    ("ratio and image_token_ratio_list", {"ratio": 0.5, "image_token_ratio_list": [0.5, 0.25, 0.125]},
     ValidationError, r"Give either ratio \(λ per stage\) or image_token_ratio_list", r"not both"),
    ("stages with layer_list", {"stages": 4, "layer_list": [2, 4, 6]}, ValidationError,
     r"`stages` sets equal stages", r"cannot be combined with layer_list or layer_fractions"),
    ("stages with layer_fractions", {"stages": 4, "layer_fractions": [0.25, 0.5, 0.75]}, ValidationError,
     r"`stages` sets equal stages", r"cannot be combined with layer_list or layer_fractions"),
    ("stages below 2", {"stages": 1}, ValidationError, r"stages\s+Input should be greater than or equal to 2", r"greater than or equal to 2"),
    ("layer_fractions outside (0, 1)", {"layer_fractions": [0.25, 1.0]}, ValidationError,
     r"layer_fractions=\[0\.25, 1\.0\]", r"every entry must be in \(0, 1\)"),
    ("layer_fractions not increasing", {"layer_fractions": [0.5, 0.25]}, ValidationError,
     r"layer_fractions=\[0\.5, 0\.25\]", r"must be strictly increasing"),
    ("unknown positions mode", {"positions": "renumber"}, ValidationError,
     r"positions\s+Input should be 'keep' or 'compact'", r"'keep' or 'compact'"),
    ("unknown option name", {"layer_lists": [2, 4, 6]}, ValidationError,
     r"Unknown option\(s\) 'layer_lists' for PyramidDropConfig",
     (r"Did you mean 'layer_list' for 'layer_lists'\?.*Valid options: layer_list, image_token_ratio_list, "
      r"layer_fractions, ratio, stages, positions, budget, budget_flops, reference, scoring, rank_layer, query\.")),
    ("two unknown option names", {"ratios": [0.5], "stage": 3}, ValidationError,
     r"Unknown option\(s\) 'ratios', 'stage'", r"Did you mean 'ratio' for 'ratios'\?.*Did you mean 'stages' for 'stage'\?"),
    ("layer_fractions that collapse on a shallow model", {"layer_fractions": [0.25, 0.3]}, ScheduleError,
     r"Boundaries \[0\.25, 0\.3\] resolve to layers \[2, 2\] on a 8-layer model: two boundaries fall on the same layer",
     r"Use fewer or wider-spaced fractions for this depth, or absolute layers \(layer_list\)"),
    ("λ whose powers underflow", {"ratio": 1e-200}, ValidationError,
     r"ratio=1e-200 is too small: λ\^3 underflows to 0", r"Use a larger ratio, or give image_token_ratio_list"),
    ("explicit default stages with layer_list", {"stages": 4, "layer_list": [2, 4, 6]}, ValidationError,
     r"`stages` sets equal stages", r"cannot be combined with layer_list or layer_fractions"),
]

def _params():
    for case in CASES:
        yield pytest.param(case, id=case.id)
    for name, options, exc, problem, fix in OPTION_CASES:
        yield pytest.param(Case(f"option: {name}", at_wrap(llava32, **options), exc, problem, fix), id=f"option: {name}")


@pytest.mark.parametrize("case", list(_params()))
def test_user_error_names_the_problem_and_the_fix(case: Case):
    with pytest.raises(case.exc) as err:
        case.call()
    message = str(err.value)
    assert re.search(case.problem, message, re.DOTALL), f"problem not named:\n{message}"
    assert re.search(case.fix, message, re.DOTALL), f"fix not named:\n{message}"


def test_every_tokenprune_error_type_is_also_a_standard_exception():
    """Callers that catch the standard types keep working: KeyError for an unknown name, etc."""
    assert issubclass(UnknownStrategyError, KeyError)
    assert issubclass(UnsupportedModelError, TypeError)
    assert issubclass(ScheduleError, ValueError) and issubclass(ValidationError, ValueError)
    assert issubclass(UnsupportedFeatureError, NotImplementedError)
    assert issubclass(AlreadyWrappedError, RuntimeError) and issubclass(NotWrappedError, RuntimeError)


# ----------------------------------------------------------------------------------------------
# Not errors: dtype cast after wrap, inputs_embeds without input_ids
# ----------------------------------------------------------------------------------------------
def test_a_model_cast_after_wrap_still_runs_and_keep_all_stays_bitwise():
    twin = tm.make_llava(dtype=F32)  # never wrapped; the same float32-drawn weights
    inputs32 = tm.llava_inputs(twin, "mixed")
    with torch.no_grad():
        reference = twin(**inputs32).logits

    model = tokenprune.wrap(tm.make_llava(dtype=F64), "pyramiddrop", ratio=1.0)
    assert model(**tm.llava_inputs(model, "mixed")).logits.dtype == F64  # ran in float64 first
    model.to(F32)
    assert model.tokenprune.active
    with torch.no_grad():
        logits = model(**inputs32).logits
    assert logits.dtype == F32 and torch.equal(logits, reference)

    # Pruned: casting a wrapped model == wrapping the cast model, bit for bit.
    tokenprune.unwrap(model)
    model.to(F64)
    tokenprune.wrap(model, "pyramiddrop")
    model.to(F32)
    with torch.no_grad():
        logits = model(**inputs32).logits
    stats = model.tokenprune.stats
    with tokenprune.pruned(twin, "pyramiddrop") as handle, torch.no_grad():
        expected = twin(**inputs32).logits
        assert handle.stats.visual_tokens == stats.visual_tokens
    assert logits.dtype == F32 and torch.isfinite(logits).all()
    assert torch.equal(logits, expected)
    assert stats.visual_tokens[-1] == [2, 4, 0]


@pytest.mark.parametrize("family", ["llava", "internvl_qwen2"])
def test_inputs_embeds_without_input_ids_equals_the_input_ids_path(family):
    factory, builder = tm.FAMILIES[family]
    model = factory(dtype=F64)
    inputs = builder(model, layout="mixed")
    with torch.no_grad():
        embeds = model.get_input_embeddings()(inputs["input_ids"])
    by_embeds = {k: v for k, v in inputs.items() if k != "input_ids"}
    by_embeds["inputs_embeds"] = embeds
    with tokenprune.pruned(model, "pyramiddrop", ratio=0.5) as handle, torch.no_grad():
        expected = model(**inputs).logits
        selection = handle.selection()
        stats = handle.stats
        logits = model(**by_embeds).logits
        assert handle.stats.visual_tokens == stats.visual_tokens
        assert len(handle.selection()) == len(selection) == 4
        for (layer, idx, valid), (layer2, idx2, valid2) in zip(selection, handle.selection()):
            assert layer == layer2 and torch.equal(idx, idx2) and torch.equal(valid, valid2)
    assert logits.shape == expected.shape and logits.shape[1] < inputs["input_ids"].shape[1]
    assert torch.equal(logits, expected)


def test_a_cache_cropped_after_a_reduced_prefill_is_refused_at_the_next_step():
    """Reduced layers hold fewer tokens than layer 0; a layer edited by hand no longer matches the
    record. The decode step checks the first layer of every stage (one shape read per stage and step)."""
    model = tokenprune.wrap(llava32())
    inputs = tm.llava_inputs(model)
    cache = DynamicCache()
    with torch.no_grad():
        logits = model(**inputs, cache=cache, use_cache=True).logits
        assert cache.get_seq_length(model.tokenprune.layers[0]) < cache.get_seq_length()  # a reduced prefill
        step = {"input_ids": logits[:, -1:].argmax(-1), "cache": cache, "use_cache": True}
        model(**step)  # an untouched cache decodes
        first = model.tokenprune.layers[0]
        cache.layers[first].crop(-2)  # one reduced layer edited by hand
        with pytest.raises(RuntimeError, match=r"holds \d+ tokens, expected \d+.*changed outside tokenprune"):
            model(**step)
