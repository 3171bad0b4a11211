"""The parts of the vLLM plugin that need no vLLM: configuration, choice encoding and M-RoPE positions.

(`tests/test_vllm_plugin.py` runs the plugin inside vLLM, from vLLM's own venv.)
"""

from __future__ import annotations

import json

import pydantic
import pytest
import torch

from tokenprune.errors import UnknownStrategyError, UnsupportedFeatureError
from tokenprune.integrations.vllm.config import (
    build_pruning,
    decode_choice,
    encode_choice,
    hf_overrides,
    projector_strategies,
    resolve_request,
)
from tokenprune.integrations.vllm.positions import attach_offsets, detach_offsets, grid_offsets, mrope_positions
from tokenprune.registry import get_registry


def test_projector_strategies_are_the_ones_that_run_before_the_llm():
    assert projector_strategies() == ["divprune", "downsample", "pooling", "visionzip"]


def test_a_bad_option_gives_the_message_tokenprune_wrap_gives():
    with pytest.raises(pydantic.ValidationError) as direct:
        get_registry().build("visionzip", ratio=2)
    with pytest.raises(ValueError) as plugin:
        resolve_request(None, {"strategy": "visionzip", "ratio": 2})
    message = str(plugin.value)
    assert message.startswith('tokenprune (vLLM plugin), hf_overrides["tokenprune"] = {"strategy": "visionzip", "ratio": 2}: ')
    assert str(direct.value).splitlines()[:3] == message.split("}: ", 1)[1].splitlines()[:3]
    with pytest.raises(ValueError, match=r'mm_processor_kwargs\["tokenprune"\]'):
        resolve_request({"strategy": "pooling", "ratio": 0}, None)
    with pytest.raises(UnknownStrategyError, match="Did you mean 'visionzip'"):
        resolve_request(None, {"strategy": "visionzipp"})


@pytest.mark.parametrize("name", ["pyramiddrop", "fastv", "sparsevlm", "dart"])
def test_in_llm_strategies_fail_with_why_and_what_to_use(name):
    with pytest.raises(UnsupportedFeatureError) as err:
        build_pruning({"strategy": name})
    text = str(err.value)
    assert "inside the LLM" in text and "KV cache" in text and "divprune, downsample, pooling, visionzip" in text


def test_encoder_strategies_fail_too():
    with pytest.raises(UnsupportedFeatureError, match="between the vision tower's blocks"):
        build_pruning({"strategy": "tome", "r": 2})


def test_missing_strategy_and_wrong_type_are_named():
    with pytest.raises(TypeError, match='needs "strategy"'):
        build_pruning({"ratio": 0.5})
    with pytest.raises(TypeError, match="must be a mapping"):
        build_pruning("visionzip")
    with pytest.raises(ValueError, match='"none" takes no options'):
        resolve_request({"strategy": "none", "ratio": 0.5}, None)


def test_requests_override_the_default_and_none_is_dense():
    default = {"strategy": "visionzip", "ratio": 0.5}
    assert resolve_request(None, default) == default
    assert resolve_request(None, None) == {"strategy": "none"}
    assert resolve_request({"strategy": "none"}, default) == {"strategy": "none"}
    assert resolve_request({"strategy": "pooling", "ratio": 0.25}, default) == {"strategy": "pooling", "ratio": 0.25}


def test_composed_projector_strategies_are_accepted():
    pruning = build_pruning({"scheduler": "projector", "scorer": "attention", "reducer": "topk", "ratio": 0.5})
    assert pruning.ratio == 0.5


def test_a_choice_survives_its_tensor_encoding():
    choice = {"strategy": "visionzip", "ratio": 0.25, "contextual": 0.1}
    code = encode_choice(choice)
    assert code.dtype == torch.uint8 and code.shape == (512,)
    pruning = decode_choice(code)
    assert pruning.name == "visionzip" and pruning.ratio == 0.25 and pruning.selection.reducer.contextual == 0.1
    assert decode_choice(code) is pruning  # built once per distinct choice
    assert decode_choice(encode_choice({"strategy": "none"})) is None
    with pytest.raises(ValueError, match="at most 512"):
        encode_choice({"strategy": "visionzip", "pad": "x" * 600})


def test_hf_overrides_maps_the_architecture_and_validates(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Qwen2VLForConditionalGeneration"]}))
    assert hf_overrides(tmp_path, "pooling", ratio=0.25) == {
        "architectures": ["TokenpruneQwen2VLForConditionalGeneration"],
        "tokenprune": {"strategy": "pooling", "ratio": 0.25},
    }
    with pytest.raises(pydantic.ValidationError):
        hf_overrides(tmp_path, "pooling", ratio=3)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["InternVLForConditionalGeneration"]}))
    with pytest.raises(UnsupportedFeatureError, match="supports LlavaForConditionalGeneration"):
        hf_overrides(tmp_path, "pooling")


def _full_positions(length, items):
    """Positions of the full prompt, as transformers' Qwen2-VL computes them (every token of every grid)."""
    return mrope_positions(length, [(o, t, h, w, f, t * h * w) for o, t, h, w, f in items])


@pytest.mark.parametrize("layout", ["image-in-text", "image-last", "two-images"])
def test_kept_tokens_get_their_full_prompt_positions(layout):
    gen = torch.Generator().manual_seed(0)
    grids = {"image-in-text": [(3, (1, 4, 6))], "image-last": [(5, (1, 3, 3))], "two-images": [(2, (1, 4, 4)), (26, (1, 2, 3))]}[layout]
    tail = {"image-in-text": 4, "image-last": 0, "two-images": 3}[layout]
    # full prompt: text, then each image's grid tokens
    full_items, offset, cursor = [], 0, 0
    for text, (t, h, w) in grids:
        offset = cursor + text
        full_items.append((offset, t, h, w, 1.0))
        cursor = offset + t * h * w
    full_length = cursor + tail
    full, full_delta = _full_positions(full_length, full_items)
    # keep a random subset of every image, in raster order
    keep_columns, short_items, shift, added = [], [], 0, []
    previous = 0
    for (offset, t, h, w, f) in full_items:
        n = t * h * w
        kept = torch.sort(torch.randperm(n, generator=gen)[: max(1, n // 3)]).values
        keep_columns += list(range(previous, offset)) + [offset + int(i) for i in kept]
        short_items.append((offset - shift, t, h, w, f, len(kept)))
        added.append(grid_offsets(kept, (t, h, w)))
        shift += n - len(kept)
        previous = offset + n
    keep_columns += list(range(previous, full_length))
    short, delta = mrope_positions(full_length - shift, short_items)
    # add each kept token's grid offset at its placeholder (what the plugin does in forward)
    offsets = torch.zeros_like(short)
    for (offset, _, _, _, _, k), rows in zip(short_items, added):
        offsets[:, offset : offset + k] = rows.T
    assert torch.equal(short + offsets, full[:, keep_columns])
    # decode positions continue where the full prompt's do: position = index + delta
    assert (full_length - shift) + delta == full_length + full_delta


def test_offsets_ride_through_bfloat16_exactly():
    embeds = torch.randn(5, 8, dtype=torch.bfloat16)
    offsets = torch.tensor([[0, 0, 0], [1, 200, 3], [0, 16383, 127], [2, 5, 128], [0, 1, 999]])
    rows = attach_offsets(embeds, offsets)
    assert rows.shape == (5, 14)
    features, back = detach_offsets(rows)
    assert torch.equal(features, embeds) and torch.equal(back, offsets)
    with pytest.raises(ValueError, match="at most 16383"):
        attach_offsets(embeds, offsets + 16384)
