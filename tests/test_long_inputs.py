"""Long and odd inputs on tiny models (float64, SDPA): nothing crashes, counts follow the plan, and
the pruned run equals the masked reference (the unwrapped full-length model with the removed tokens
masked out as keys, docs/concepts.md, "The exactness contract", item 4).

* a ~4k-token prompt (4000 text tokens + one image);
* one visual token per image (a LLaVA whose vision tower sees a single patch), where int()
  truncation keeps 0 tokens: a sample may lose all its visual tokens, or every sample may;
* all-visual prompts: only image tokens and the final query token, or no text at all;
* many images in one sample (8 images = 128 visual tokens next to a 1-image and a text-only row).
"""

from __future__ import annotations

import functools

import pytest
import tiny_models as tm
import torch
from custom_layouts import (
    build_inputs,
    check_selection,
    kept_or_all,
    last_real,
    masked_reference,
    max_masked_reference_diff,
)
from exactness import at_positions, record
from transformers import LlavaForConditionalGeneration

import tokenprune

F64 = torch.float64
TOL = 1e-10


@functools.cache
def llava():
    return tm.make_llava(dtype=F64)  # 16 visual tokens per image


@functools.cache
def llava_one_token():
    """Tiny LLaVA whose 4 px image is one 4 px patch: one visual token per image (CLS dropped)."""
    config = tm.llava_config(num_layers=8)
    config.vision_config.image_size = tm.PATCH_PX
    config.image_seq_length = 1
    model = tm._finish(LlavaForConditionalGeneration, config, "sdpa", F64, 0)
    assert tm.num_image_tokens(model.config) == 1
    return model


@functools.cache
def qwen2_vl():
    return tm.FAMILIES["qwen2_vl"][0](dtype=F64)


def run_and_check(model, family: str, inputs: dict, cell: str, **options):
    """Pruned forward; selection checks; masked-reference equality. Returns (per-layer counts, stats)."""
    with tokenprune.pruned(model, "pyramiddrop", **options) as handle, torch.no_grad():
        logits = model(**inputs).logits
        per_layer = check_selection(handle, inputs, family)
        stats = handle.stats
        selection = handle.selection()
        kept = kept_or_all(handle, inputs)
    assert torch.isfinite(logits).all()
    assert stats.visual_tokens == per_layer
    diff = record("long/odd inputs: masked reference", f"{cell}-sdpa-", max_masked_reference_diff(
        model, inputs, logits, selection, kept))
    assert diff <= TOL
    if len(selection) > 1:  # negative control: the unmasked full model disagrees
        idx, valid = kept
        with torch.no_grad():
            plain = model(**inputs).logits
        plain = plain.gather(1, idx.unsqueeze(-1).expand(-1, -1, plain.shape[-1]))
        assert (logits - plain).abs().amax(-1)[valid].max().item() > 1e3 * TOL
    return per_layer, stats, logits, kept


def expected_counts(num_visual, layers=(2, 4, 6), ratios=(0.5, 0.25, 0.125), num_layers=8):
    """``[layer][sample]`` of PyramidDrop: int(N * ratio) from the original N, from each layer on."""
    table, current = [], list(num_visual)
    for layer in range(num_layers):
        if layer in layers:
            current = [int(n * ratios[layers.index(layer)]) for n in num_visual]
        table.append(list(current))
    return table


# ----------------------------------------------------------------------------------------------
# A ~4k-token prompt
# ----------------------------------------------------------------------------------------------
def test_a_4k_token_prompt_runs_with_correct_counts():
    model = llava()
    inputs = build_inputs(model, "llava", [[3000, "I", 1000]])
    assert inputs["input_ids"].shape == (1, 4016)
    per_layer, stats, logits, (idx, valid) = run_and_check(model, "llava", inputs, "llava-4k")
    assert per_layer == expected_counts([16])
    assert stats.sequence_lengths == [4016, 4016, 4008, 4008, 4004, 4004, 4002, 4002]
    assert logits.shape == (1, 4002, tm.VOCAB_SIZE)
    assert idx[0, -1].item() == 4015 and bool(valid.all())


# ----------------------------------------------------------------------------------------------
# One visual token per image: int() truncation keeps 0
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("side", ["left", "right"])
def test_one_visual_token_per_image(side):
    model = llava_one_token()
    rows = [[3, "I", 4], [2, "I", 1, "I", 1, "I", 3], [5]]  # 1, 3 and 0 visual tokens
    inputs = build_inputs(model, "llava", rows, side)
    per_layer, stats, _, _ = run_and_check(model, "llava", inputs, f"llava_1tok-{side}")
    # int(1 * 0.5) = 0: the single-token row loses its only visual token at layer 2;
    # int(3 * 0.5) = 1, int(3 * 0.25) = 0.
    assert per_layer == expected_counts([1, 3, 0]) == [[1, 3, 0]] * 2 + [[0, 1, 0]] * 2 + [[0, 0, 0]] * 4
    assert stats.sequence_lengths == [10, 10, 8, 8, 7, 7, 7, 7]


def test_one_visual_token_per_image_every_row_drops_to_zero():
    model = llava_one_token()
    inputs = build_inputs(model, "llava", [[3, "I", 4], [6, "I", 2]], "left")
    per_layer, stats, _, (idx, valid) = run_and_check(model, "llava", inputs, "llava_1tok-all0")
    assert per_layer == [[1, 1]] * 2 + [[0, 0]] * 6
    assert stats.sequence_lengths == [9, 9, 8, 8, 8, 8, 8, 8]  # 7 + 1 filler and 8 real tokens
    assert stats.flops[0] < stats.dense_flops[0]
    for b in range(2):  # every kept real token is text
        assert not bool((inputs["input_ids"][b][idx[b][valid[b]]] == tm.IMAGE_ID).any())


def test_one_visual_token_per_image_batch_invariance():
    model = llava_one_token()
    inputs = build_inputs(model, "llava", [[3, "I", 4], [2, "I", 1, "I", 1, "I", 3], [5]], "left")
    with tokenprune.pruned(model, "pyramiddrop") as handle, torch.no_grad():
        batch = at_positions(model(**inputs).logits, kept_or_all(handle, inputs), last_real(inputs))
        for b in range(3):
            alone = tm.single_row(inputs, b)
            mine = at_positions(model(**alone).logits, kept_or_all(handle, alone), last_real(alone))[0]
            assert (mine - batch[b]).abs().max().item() <= TOL


def test_one_visual_token_keep_all_is_bitwise_identity():
    model = llava_one_token()
    inputs = build_inputs(model, "llava", [[3, "I", 4], [2, "I", 1, "I", 3]], "left")
    with torch.no_grad():
        reference = model(**inputs).logits
    with tokenprune.pruned(model, "pyramiddrop", ratio=1.0), torch.no_grad():
        assert torch.equal(model(**inputs).logits, reference)


# ----------------------------------------------------------------------------------------------
# All-visual prompts
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "rows, num_visual",
    [
        pytest.param([["I", 1]], [16], id="one image + query"),
        pytest.param([["I", "I", "I", 1]], [48], id="three adjacent images + query"),
        pytest.param([["I", 1], [5, "I", 3]], [16, 16], id="all-visual row next to a normal row"),
    ],
)
def test_all_visual_prompt(rows, num_visual):
    model = llava()
    inputs = build_inputs(model, "llava", rows, "left")
    per_layer, _, _, (idx, valid) = run_and_check(model, "llava", inputs, "llava-allvisual")
    assert per_layer == expected_counts(num_visual)
    last = last_real(inputs)
    for b in range(len(rows)):
        assert int(last[b]) in idx[b][valid[b]].tolist()


def test_all_visual_prompt_down_to_the_query_alone():
    """A schedule that keeps no visual token leaves a one-token sequence: the query."""
    model = llava()
    inputs = build_inputs(model, "llava", [["I", 1]])
    per_layer, stats, logits, (idx, valid) = run_and_check(
        model, "llava", inputs, "llava-queryonly", layer_list=[1, 4], image_token_ratio_list=[0.05, 0.01]
    )
    assert per_layer == [[16]] + [[0]] * 7
    assert stats.sequence_lengths == [17] + [1] * 7
    assert logits.shape[1] == 1 and idx.tolist() == [[16]] and valid.tolist() == [[True]]


def test_prompt_of_only_an_image_keeps_its_visual_query():
    """No text at all: the last visual token is the query; it is never dropped, and counts as one
    of the sample's kept visual tokens (so the plan is met exactly while it keeps >= 1)."""
    model = llava()
    inputs = build_inputs(model, "llava", [["I"]])
    per_layer, _, _, (idx, valid) = run_and_check(model, "llava", inputs, "llava-imageonly")
    assert per_layer == expected_counts([16])
    assert 15 in idx[0][valid[0]].tolist()
    # With a plan of 0 the visual query is still kept (the plan says 0, the model holds 1).
    per_layer, _, _, (idx, _) = run_and_check(
        model, "llava", inputs, "llava-imageonly", layer_list=[3], image_token_ratio_list=[0.01]
    )
    assert per_layer == [[16]] * 3 + [[1]] * 5 and idx.tolist() == [[15]]


# ----------------------------------------------------------------------------------------------
# Many images per sample
# ----------------------------------------------------------------------------------------------
EIGHT = [2] + [seg for _ in range(8) for seg in ("I", 1)] + [3]  # 8 images separated by text


@pytest.mark.parametrize("side", ["left", "right"])
def test_eight_images_in_one_row(side):
    model = llava()
    inputs = build_inputs(model, "llava", [EIGHT, [4, "I", 5], [7]], side)
    per_layer, stats, _, _ = run_and_check(model, "llava", inputs, f"llava-8images-{side}")
    assert stats.num_visual == [128, 16, 0]
    assert per_layer == expected_counts([128, 16, 0])


def test_eight_images_in_one_row_batch_invariance():
    model = llava()
    inputs = build_inputs(model, "llava", [EIGHT, [4, "I", 5], [7]], "left")
    with tokenprune.pruned(model, "pyramiddrop", ratio=0.3) as handle, torch.no_grad():
        batch = at_positions(model(**inputs).logits, kept_or_all(handle, inputs), last_real(inputs))
        for b in range(3):
            alone = tm.single_row(inputs, b)
            mine = at_positions(model(**alone).logits, kept_or_all(handle, alone), last_real(alone))[0]
            assert record("long/odd inputs: batch invariance", "llava-8images-sdpa-", (mine - batch[b]).abs().max().item()) <= TOL


def test_eight_images_in_one_qwen2_vl_row():
    """Qwen2-VL: eight images (square and wide) in one row, 3-D M-RoPE positions for each."""
    model = qwen2_vl()
    row = [2] + [seg for kind in "IWIWIWIW" for seg in (kind, 1)] + [3]
    inputs = build_inputs(model, "qwen2_vl", [row, [4, "I", 5]], "left")
    per_layer, stats, _, _ = run_and_check(model, "qwen2_vl", inputs, "qwen2_vl-8images")
    assert stats.num_visual == [4 * 16 + 4 * 24, 16]
    assert per_layer == expected_counts([160, 16])


def test_masked_reference_helper_has_teeth():
    """The reference differs from the plain model exactly when tokens were masked (sanity of the helper)."""
    model = llava_one_token()
    inputs = build_inputs(model, "llava", [[3, "I", 4]])
    with tokenprune.pruned(model, "pyramiddrop") as handle, torch.no_grad():
        model(**inputs)
        selection = handle.selection()
    with torch.no_grad():
        plain = model(**inputs).logits
    assert not torch.equal(masked_reference(model, inputs, selection), plain)
    full = [selection[0]]  # only stage 0: nothing masked, so the plain model up to mask-format rounding
    assert (masked_reference(model, inputs, full) - plain).abs().max().item() <= TOL
