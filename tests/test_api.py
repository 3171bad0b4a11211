"""The public API on tiny stock LLaVA-family models: wrap / unwrap / pruned, the handle, errors,
save/load, generate, stats.

Numerical exactness of pruned outputs is `test_exactness.py`'s job; here float32 is used for
behaviour checks and float64 where outputs are compared.

Note on hooks: transformers 5.x installs its own output-capturing forward hooks on the first call
of a model, so every "hooks before wrap" snapshot is taken after a warm-up forward.
"""

from __future__ import annotations

import glob

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import (
    DynamicCache,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaForConditionalGeneration,
    StaticCache,
)

import tiny_models as tm
import tokenprune
from tokenprune import (
    AlreadyWrappedError,
    NotWrappedError,
    ScheduleError,
    UnsupportedFeatureError,
    UnsupportedModelError,
    WrapHandle,
)
from tokenprune.components import QueryAttentionScorer, StageScheduler, TopKDrop
from tokenprune.cost import layer_flops, stack_flops
from tokenprune.interfaces import Strategy
from tokenprune.plugins.pyramiddrop import PyramidDropConfig

F32, F64 = torch.float32, torch.float64
KEEP_ALL = {"ratio": 1.0}


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------
def hook_snapshot(model: nn.Module) -> dict:
    """Every module's forward (pre-)hook ids, so 'same hooks' means the very same registrations."""
    return {
        name: (
            tuple(m._forward_pre_hooks),
            tuple(m._forward_hooks),
            tuple(m._forward_pre_hooks_with_kwargs),
            tuple(m._forward_hooks_with_kwargs),
        )
        for name, m in model.named_modules()
    }


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


@torch.no_grad()
def warm_up(model: nn.Module, inputs: dict) -> None:
    model(**inputs)
    model(**inputs, output_hidden_states=True)


@torch.no_grad()
def logits(model: nn.Module, inputs: dict, **kwargs) -> torch.Tensor:
    return model(**inputs, **kwargs).logits


def text_inputs(batch: int = 2, length: int = 9, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(tm.FIRST_TEXT_ID, tm.TEXT_VOCAB, (batch, length), generator=gen)
    mask = torch.ones_like(ids)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": torch.arange(length).expand(batch, -1)}


def greedy(model: nn.Module, inputs: dict, **kwargs) -> torch.Tensor:
    return model.generate(**inputs, max_new_tokens=4, do_sample=False, **kwargs)


# ----------------------------------------------------------------------------------------------
# wrap / handle / unwrap / pruned
# ----------------------------------------------------------------------------------------------
def test_wrap_returns_the_same_model_with_its_handle():
    model = tm.make_llava(dtype=F32)
    assert tokenprune.wrap(model, "pyramiddrop", ratio=0.5) is model
    handle = model.tokenprune
    assert isinstance(handle, WrapHandle) and tokenprune.handle_of(model) is handle
    assert handle.model is model and handle.active
    assert handle.config == PyramidDropConfig(ratio=0.5)
    assert handle.strategy.name == "pyramiddrop" and handle.adapter_name == "llava"
    assert handle.layers == (2, 4, 6) and handle.num_layers == 8
    assert handle.stats is None and handle.kept_positions() is None  # nothing ran yet
    assert repr(handle) == "WrapHandle(strategy='pyramiddrop', adapter='llava', layers=[2, 4, 6])"
    assert tokenprune.unwrap(model) is model
    assert not handle.active and not hasattr(model, "tokenprune")
    with pytest.raises(NotWrappedError, match="not wrapped by tokenprune; call tokenprune.wrap"):
        tokenprune.handle_of(model)


def test_wrap_default_strategy_is_pyramiddrop():
    model = tokenprune.wrap(tm.make_llava(dtype=F32))
    assert model.tokenprune.strategy.name == "pyramiddrop" and model.tokenprune.config == PyramidDropConfig()
    model.tokenprune.remove()
    assert not hasattr(model, "tokenprune")


def test_pruned_context_manager_unwraps_on_exit():
    model = tm.make_llava(dtype=F32)
    inputs = tm.llava_inputs(model)
    warm_up(model, inputs)
    before = hook_snapshot(model)
    with tokenprune.pruned(model, "pyramiddrop") as handle:
        assert model.tokenprune is handle and hook_snapshot(model) != before
        assert logits(model, inputs).shape[1] < inputs["input_ids"].shape[1]
    assert not hasattr(model, "tokenprune") and not handle.active
    assert hook_snapshot(model) == before
    assert handle.stats.visual_tokens[-1] == [2]  # stats stay readable on the handle
    assert logits(model, inputs).shape[1] == inputs["input_ids"].shape[1]


def test_pruned_context_manager_unwraps_on_exception():
    model = tm.make_llava(dtype=F32)
    warm_up(model, tm.llava_inputs(model))
    before = hook_snapshot(model)
    with pytest.raises(ZeroDivisionError):
        with tokenprune.pruned(model, "pyramiddrop", ratio=0.25):
            assert hasattr(model, "tokenprune")
            1 / 0  # noqa: B018
    assert not hasattr(model, "tokenprune")
    assert hook_snapshot(model) == before


def test_pruned_tolerates_a_manual_unwrap_inside_the_block():
    model = tm.make_llava(dtype=F32)
    with tokenprune.pruned(model) as handle:
        tokenprune.unwrap(model)
        assert not handle.active
    assert not hasattr(model, "tokenprune")
    # and the model can be wrapped again afterwards
    tokenprune.wrap(model)
    tokenprune.unwrap(model)


def test_handle_is_a_context_manager():
    model = tm.make_llava(dtype=F32)
    with tokenprune.wrap(model).tokenprune as handle:
        assert handle.active
    assert not hasattr(model, "tokenprune")


def test_double_wrap_raises_and_keeps_the_first_wrap():
    model = tokenprune.wrap(tm.make_llava(dtype=F32), "pyramiddrop", ratio=0.5)
    first = model.tokenprune
    hooks = hook_snapshot(model)
    with pytest.raises(AlreadyWrappedError, match=r"already wrapped with 'pyramiddrop'; call tokenprune.unwrap"):
        tokenprune.wrap(model, "pyramiddrop", ratio=0.25)
    assert model.tokenprune is first and first.config.ratio == 0.5
    assert hook_snapshot(model) == hooks


def test_unwrap_of_an_unwrapped_model_raises():
    model = tm.make_llava(dtype=F32)
    with pytest.raises(NotWrappedError, match="not wrapped by tokenprune"):
        tokenprune.unwrap(model)
    tokenprune.wrap(model)
    tokenprune.unwrap(model)
    with pytest.raises(NotWrappedError):
        tokenprune.unwrap(model)


@pytest.mark.parametrize("family", list(tm.FAMILIES))
def test_unwrap_restores_the_model_exactly(family):
    factory, builder = tm.FAMILIES[family]
    model = factory(dtype=F64)
    inputs = builder(model, layout="left_padded")
    labeled = tm.add_labels(inputs)
    warm_up(model, inputs)
    hooks = hook_snapshot(model)
    loss_before = model.loss_function
    assert "_loss_function" not in model.__dict__
    with torch.no_grad():
        ref = model(**inputs).logits
        ref_loss = model(**labeled).loss
    ref_ids = greedy(model, inputs)

    tokenprune.wrap(model, "pyramiddrop")
    assert "_loss_function" in model.__dict__  # labels follow the kept positions while wrapped
    with torch.no_grad():
        pruned = model(**inputs).logits
        pruned_loss = model(**labeled).loss
    assert pruned.shape[1] < ref.shape[1]
    assert torch.isfinite(pruned_loss) and pruned_loss != ref_loss
    greedy(model, inputs)
    tokenprune.unwrap(model)

    assert hook_snapshot(model) == hooks, "a hook was left behind"
    assert "_loss_function" not in model.__dict__ and model.loss_function is loss_before
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, ref)
        assert torch.equal(model(**labeled).loss, ref_loss)
    assert torch.equal(greedy(model, inputs), ref_ids)


def test_unwrap_restores_a_custom_loss_function():
    model = tm.make_llava(dtype=F32)

    def my_loss(logits, labels, vocab_size, **kwargs):
        return logits.sum() * 0

    model.loss_function = my_loss
    tokenprune.wrap(model)
    assert model.loss_function is not my_loss
    tokenprune.unwrap(model)
    assert model.__dict__["_loss_function"] is my_loss


# ----------------------------------------------------------------------------------------------
# Errors at wrap time
# ----------------------------------------------------------------------------------------------
def tiny_llama() -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2
    )
    return LlamaForCausalLM(config)


def test_unsupported_model_raises_listing_llava():
    with pytest.raises(UnsupportedModelError) as err:
        tokenprune.wrap(tiny_llama())
    msg = str(err.value)
    assert "No tokenprune adapter supports LlamaForCausalLM (model_type='llama')" in msg
    expected = "internvl, llava, llava_next, llava_onevision, qwen2_5_vl, qwen2_vl, qwen3_vl"
    assert f"Supported model types: {expected}." in msg

    with pytest.raises(UnsupportedModelError, match=r"No tokenprune adapter supports Linear\. Supported .*llava"):
        tokenprune.wrap(nn.Linear(2, 2))


def test_wrapping_only_the_text_stack_is_unsupported():
    model = tm.make_llava(dtype=F32)
    with pytest.raises(UnsupportedModelError, match="Wrap the full \\*ForConditionalGeneration model"):
        tokenprune.wrap(model.model.language_model)
    assert hook_count(model) == 0


def test_flex_attention_raises_at_wrap():
    # The tiny factories accept attn="flex_attention" (torch 2.13 has flex attention on CPU), so the
    # stock model is built with it for real; no monkeypatching is needed.
    model = tm.make_llava(attn="flex_attention", dtype=F32)
    assert model.model.language_model.config._attn_implementation == "flex_attention"
    with pytest.raises(UnsupportedFeatureError, match="Flex attention is not supported yet") as err:
        tokenprune.wrap(model)
    assert "attn_implementation='sdpa'" in str(err.value)
    assert not hasattr(model, "tokenprune") and hook_count(model) == 0


def test_switching_to_flex_attention_after_wrap_raises_at_forward():
    model = tokenprune.wrap(tm.make_llava(dtype=F32))
    inputs = tm.llava_inputs(model)
    model.config.text_config._attn_implementation = "flex_attention"  # same object as the stack's config
    with pytest.raises(UnsupportedFeatureError, match="Flex attention"):
        logits(model, inputs)
    model.config.text_config._attn_implementation = "sdpa"
    assert logits(model, inputs).shape[1] == 11


def test_static_cache_in_generation_config_is_accepted():
    """A static cache is an engine mode now (tests/test_engine_modes.py); wrap keeps the config as it is."""
    model = tm.make_llava(dtype=F32)
    model.generation_config.cache_implementation = "static"
    inputs = tm.llava_inputs(model)
    tokenprune.wrap(model)
    assert greedy(model, inputs).shape[1] > inputs["input_ids"].shape[1]
    assert model.tokenprune.stats.flops_saved > 0.3


@pytest.mark.parametrize("where", ["layer", "head", "vlm_forward_hook"])
def test_failure_in_the_middle_of_install_leaves_no_hooks(where, monkeypatch):
    model = tm.make_llava(dtype=F32)
    inputs = tm.llava_inputs(model)
    warm_up(model, inputs)
    hooks = hook_snapshot(model)

    def boom(*args, **kwargs):
        raise RuntimeError("hook registration failed")

    target, attr = {
        "layer": (model.model.language_model.layers[5], "register_forward_pre_hook"),
        "head": (model, "register_forward_pre_hook"),
        "vlm_forward_hook": (model.model, "register_forward_hook"),
    }[where]
    monkeypatch.setattr(target, attr, boom)
    with pytest.raises(RuntimeError, match="hook registration failed"):
        tokenprune.wrap(model)
    assert hook_snapshot(model) == hooks
    assert not hasattr(model, "tokenprune") and "_loss_function" not in model.__dict__
    monkeypatch.undo()
    tokenprune.wrap(model)  # a clean model again
    assert logits(model, inputs).shape[1] == 11
    tokenprune.unwrap(model)
    assert hook_snapshot(model) == hooks


def test_options_with_a_strategy_object_raise_type_error():
    model = tm.make_llava(dtype=F32)
    strategy = Strategy(StageScheduler([2], [0.5]), QueryAttentionScorer(), TopKDrop())
    with pytest.raises(TypeError, match=r"Options \['ratio'\] were given with a Strategy object"):
        tokenprune.wrap(model, strategy, ratio=0.5)
    with pytest.raises(TypeError, match="strategy must be a registered name or a tokenprune.Strategy, got int"):
        tokenprune.wrap(model, 42)
    assert not hasattr(model, "tokenprune") and hook_count(model) == 0


def test_schedule_error_at_wrap_attaches_nothing():
    model = tm.make_llava(dtype=F32)
    with pytest.raises(ScheduleError, match="out of range for a model with 8 decoder layers"):
        tokenprune.wrap(model, "pyramiddrop", layer_list=[2, 4, 99])
    assert not hasattr(model, "tokenprune") and hook_count(model) == 0


# ----------------------------------------------------------------------------------------------
# Text-only calls, save / load
# ----------------------------------------------------------------------------------------------
def test_text_only_batch_is_a_no_op():
    model = tm.make_llava(dtype=F64)
    text = text_inputs()
    ref = logits(model, text)
    ref_ids = greedy(model, text)
    tokenprune.wrap(model)
    handle = model.tokenprune
    assert torch.equal(logits(model, text), ref)
    assert handle.stats is None and handle.kept_positions() is None
    logits(model, tm.llava_inputs(model))  # an image call sets stats
    stats = handle.stats
    assert stats is not None
    assert torch.equal(logits(model, text), ref)
    assert handle.stats is stats  # unchanged by the text-only call
    assert torch.equal(greedy(model, text), ref_ids)
    assert handle.stats is stats


def test_save_pretrained_of_a_wrapped_model(tmp_path):
    twin = tm.make_llava(dtype=F64)  # never wrapped, same seed
    model = tokenprune.wrap(tm.make_llava(dtype=F64))
    inputs = tm.llava_inputs(model)
    logits(model, inputs)  # a pruned forward before saving
    assert set(model.state_dict()) == set(twin.state_dict())
    model.save_pretrained(tmp_path / "wrapped", safe_serialization=True)
    twin.save_pretrained(tmp_path / "plain", safe_serialization=True)

    def tensors(path):
        files = sorted(glob.glob(str(path / "*.safetensors")))
        assert files, f"no safetensors in {path}"
        out = {}
        for f in files:
            out.update(load_file(f))
        return out

    saved, plain = tensors(tmp_path / "wrapped"), tensors(tmp_path / "plain")
    assert set(saved) == set(plain) and len(saved) > 0
    assert all(torch.equal(saved[k], plain[k]) for k in saved)
    assert model.tokenprune.active  # saving does not unwrap

    def load(name):
        return LlavaForConditionalGeneration.from_pretrained(tmp_path / name, dtype=F64, attn_implementation="sdpa")

    loaded, loaded_plain = load("wrapped"), load("plain")
    assert not hasattr(loaded, "tokenprune") and not loaded.training
    assert torch.equal(logits(loaded, inputs), logits(loaded_plain, inputs))
    # vs. the in-memory twin only up to rounding: from_pretrained rebuilds the rotary `inv_freq`
    # buffer in float32 where `.to(float64)` on the twin cast it (a transformers detail, ~1e-15).
    assert torch.allclose(logits(loaded, inputs), logits(twin, inputs), atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------------------------
# Hidden states, generate, stats, positions
# ----------------------------------------------------------------------------------------------
def test_output_hidden_states_shrink_at_the_reduction_layers():
    model = tokenprune.wrap(tm.make_llava(dtype=F32))
    inputs = tm.llava_inputs(model, "single")  # 4 text + 16 image + 5 text = 25 tokens
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    stats = model.tokenprune.stats
    assert stats.sequence_lengths == [25, 25, 17, 17, 13, 13, 11, 11]
    widths = [h.shape[1] for h in out.hidden_states]
    assert len(widths) == 9
    assert widths == [25, *stats.sequence_lengths]  # embeddings, then each layer's output
    assert out.logits.shape == (1, 11, tm.VOCAB_SIZE)


def _expected_per_layer(per_stage: list[list[int]], layers=(2, 4, 6), num_layers: int = 8) -> list[list[int]]:
    out, current = [], per_stage[0]
    for i in range(num_layers):
        if i in layers:
            current = per_stage[layers.index(i) + 1]
        out.append(list(current))
    return out


def test_generate_with_beams_and_sampling_runs_pruned():
    model = tokenprune.wrap(tm.make_llava(dtype=F32))
    inputs = tm.llava_inputs(model, "left_padded")
    length = inputs["input_ids"].shape[1]
    expected = _expected_per_layer([[16] * 4, [8] * 4, [4] * 4, [2] * 4])

    beams = model.generate(**inputs, max_new_tokens=4, num_beams=2, do_sample=False)
    assert beams.shape == (2, length + 4) and torch.equal(beams[:, :length], inputs["input_ids"])
    assert model.tokenprune.stats.visual_tokens == expected  # prefill of 2 samples x 2 beams was pruned

    single = tm.llava_inputs(model, "single")
    length = single["input_ids"].shape[1]
    torch.manual_seed(0)
    sampled = model.generate(**single, max_new_tokens=4, do_sample=True, num_return_sequences=2)
    assert sampled.shape == (2, length + 4)
    assert torch.equal(sampled[:, :length], single["input_ids"].expand(2, -1))
    assert model.tokenprune.stats.visual_tokens == _expected_per_layer([[16] * 2, [8] * 2, [4] * 2, [2] * 2])
    assert not torch.isin(sampled[:, length:], torch.tensor(tm.SPECIAL_IDS)).any()


def test_keep_all_beam_search_equals_unwrapped():
    model = tm.make_llava(dtype=F64)
    inputs = tm.llava_inputs(model, "left_padded")
    kwargs = dict(max_new_tokens=5, num_beams=2, do_sample=False)
    ref = model.generate(**inputs, **kwargs)
    tokenprune.wrap(model, "pyramiddrop", **KEEP_ALL)
    assert torch.equal(model.generate(**inputs, **kwargs), ref)
    assert model.tokenprune.stats.visual_tokens == [[16] * 4] * 8  # 2 samples x 2 beams
    assert model.tokenprune.stats.flops_saved == 0.0


def test_stats_match_the_schedule_and_the_cost_model():
    model = tokenprune.wrap(tm.make_llava(dtype=F32))
    inputs = tm.llava_inputs(model, "mixed")  # rows with 1 image, 2 images, no image
    logits(model, inputs)
    stats = model.tokenprune.stats
    assert stats.num_visual == [16, 32, 0]
    plan = model.tokenprune.plan(stats.num_visual)
    assert plan.keep == ((8, 16, 0), (4, 8, 0), (2, 4, 0))
    assert stats.visual_tokens == [list(row) for row in plan.tokens_per_layer()]
    assert stats.visual_tokens == _expected_per_layer([[16, 32, 0], [8, 16, 0], [4, 8, 0], [2, 4, 0]])
    assert stats.average_visual_tokens == [7.5, 15.0, 0.0]

    d, m = 64, 128
    assert stats.dense_flops == [stack_flops([n] * 8, d, m) for n in (16, 32, 0)]
    assert stats.flops == [stack_flops(col, d, m) for col in zip(*stats.visual_tokens)]
    saved = 1 - sum(stats.flops) / sum(stats.dense_flops)
    assert stats.flops_saved == pytest.approx(saved, rel=1e-12)
    # the single-image row by hand: 2 layers each at 16, 8, 4, 2 tokens
    row0 = 2 * sum(layer_flops(n, d, m) for n in (16, 8, 4, 2))
    assert stats.flops[0] == row0 and stats.dense_flops[0] == 8 * layer_flops(16, d, m)
    assert 0.5 < stats.flops_saved < 0.6


def test_kept_positions_match_logits():
    model = tokenprune.wrap(tm.make_llava(dtype=F32))
    for layout in ("single", "left_padded", "mixed"):
        inputs = tm.llava_inputs(model, layout)
        out = logits(model, inputs)
        positions, valid = model.tokenprune.kept_positions()
        batch = inputs["input_ids"].shape[0]
        assert positions.shape == valid.shape == (batch, out.shape[1])
        assert bool((positions[:, 1:] > positions[:, :-1]).all()), "positions must ascend"
        ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
        final_visual = model.tokenprune.stats.visual_tokens[-1]
        for b in range(batch):
            kept = positions[b][valid[b]]
            text = ((ids[b] != tm.IMAGE_ID) & mask[b]).nonzero().squeeze(1)
            assert set(text.tolist()) <= set(kept.tolist()), "a text token was dropped"
            assert int((ids[b][kept] == tm.IMAGE_ID).sum()) == final_visual[b]
            assert int(valid[b].sum()) == len(text) + final_visual[b]


def test_compact_positions_run_and_differ_from_keep():
    model = tm.make_llava(dtype=F64)
    inputs = tm.llava_inputs(model, "left_padded")
    gen = dict(max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True)
    with tokenprune.pruned(model, "pyramiddrop") as handle:
        keep_logits = logits(model, inputs)
        keep_gen = model.generate(**inputs, **gen)
    with tokenprune.pruned(model, "pyramiddrop", positions="compact") as handle:
        assert handle.strategy.positions == "compact"
        compact_logits = logits(model, inputs)
        compact_gen = model.generate(**inputs, **gen)
        assert handle.stats.visual_tokens[-1] == [2, 2]
    assert compact_logits.shape == keep_logits.shape
    assert torch.isfinite(compact_logits).all()
    assert (compact_logits[:, -1] - keep_logits[:, -1]).abs().max() > 1e-6
    assert compact_gen.sequences.shape == keep_gen.sequences.shape == (2, inputs["input_ids"].shape[1] + 4)
    # the prefill of generate is the same forward as above (generate returns float32 logits)
    assert torch.allclose(compact_gen.logits[0], compact_logits[:, -1].float(), atol=1e-5, rtol=0)
    assert torch.allclose(keep_gen.logits[0], keep_logits[:, -1].float(), atol=1e-5, rtol=0)
    later = [(c - k).abs().max() for c, k in zip(compact_gen.logits[1:], keep_gen.logits[1:])]
    assert max(later) > 1e-6


def test_tensor_logits_to_keep_with_images_raises():
    model = tokenprune.wrap(tm.make_llava(dtype=F64))
    inputs = tm.llava_inputs(model)
    last = torch.tensor([inputs["input_ids"].shape[1] - 1])
    with pytest.raises(UnsupportedFeatureError, match="tensor-valued `logits_to_keep`"):
        logits(model, inputs, logits_to_keep=last)
    full = logits(model, inputs)
    one = logits(model, inputs, logits_to_keep=1)  # an int is fine
    assert one.shape == (1, 1, tm.VOCAB_SIZE)
    assert torch.allclose(one[:, -1], full[:, -1], atol=1e-12, rtol=0)
    # a text-only call may use a tensor: nothing is removed
    text = text_inputs(batch=1)
    assert logits(model, text, logits_to_keep=torch.tensor([3])).shape == (1, 1, tm.VOCAB_SIZE)


@pytest.mark.parametrize("first_call", ["with_images", "text_only"])
def test_visual_tokens_on_a_filled_cache_raise(first_call):
    model = tokenprune.wrap(tm.make_llava(dtype=F32))
    inputs = tm.llava_inputs(model) if first_call == "with_images" else text_inputs(batch=1)
    with torch.no_grad():
        out = model(**inputs, use_cache=True)
    cache = out.past_key_values
    assert isinstance(cache, DynamicCache) and cache.get_seq_length() == inputs["input_ids"].shape[1]
    more = tm.llava_inputs(model, seed=1)  # a new prompt chunk with an image
    past = inputs["input_ids"].shape[1]
    with pytest.raises(UnsupportedFeatureError, match="Visual tokens arrived on a filled KV cache"):
        with torch.no_grad():
            model(
                input_ids=more["input_ids"],
                pixel_values=more["pixel_values"],
                attention_mask=torch.ones(1, past + more["input_ids"].shape[1], dtype=torch.long),
                past_key_values=cache,
                use_cache=True,
            )
