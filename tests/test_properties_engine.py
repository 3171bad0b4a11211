"""Property tests of the engine on tiny stock models (float64, SDPA): random batch layouts and schedules.

Families: LLaVA (1-D RoPE, Llama stack), Qwen2-VL (3-D M-RoPE computed by the model, no
``position_ids``), InternVL (Qwen2 stack, multi-tile images). Each example draws a batch of 1-3
rows, left or right padding, 0-3 images per row (at least one in the batch), random text around
them (a LLaVA prompt may even end with an image, making the query visual), and a random schedule
valid for 8 layers in any of the three config forms. Then:

(a) batch invariance: every row's last-token logits equal the same row run alone (<= 1e-10), and
    it keeps the same tokens at every layer;
(b) masked reference: the pruned run equals the unwrapped full-length model with the removed
    tokens masked out as keys (<= 1e-10) at every real output row;
(c) the selection (`handle.selection()`) is well formed: sorted, unique, real tokens only, every
    text token and the query kept, kept visual tokens are visual positions, and the counts per
    layer are `handle.plan(num_visual)`.

Models are built once per module (`functools.cache`); every example unwraps (`tokenprune.pruned`).
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
    max_masked_reference_diff,
    visual_mask,
)
from exactness import at_positions, layer_visibility, record
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import tokenprune

FAMILIES = ["llava", "qwen2_vl", "internvl_qwen2"]
NUM_LAYERS = 8
TOL = 1e-10
ENGINE_PROPS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Image segments each family's builder accepts: LLaVA 16 tokens; Qwen square 16 / wide 24;
# InternVL one tile 16 / three tiles 48.
IMAGE_KINDS = {"llava": ["I"], "qwen2_vl": ["I", "W"], "internvl_qwen2": ["I", "M"]}


@functools.cache
def model_of(family: str):
    factory, _ = tm.FAMILIES[family]
    return factory(attn="sdpa", dtype=torch.float64, num_layers=NUM_LAYERS)


# ----------------------------------------------------------------------------------------------
# Strategies
# ----------------------------------------------------------------------------------------------
@st.composite
def rows_of(draw, family: str):
    """``(side, rows)``: 1-3 rows of segments, at least one image in the batch."""
    batch = draw(st.integers(1, 3))
    images = draw(st.lists(st.integers(0, 3), min_size=batch, max_size=batch))
    if sum(images) == 0:
        images[draw(st.integers(0, batch - 1))] = 1
    rows = []
    for count in images:
        if count == 0:
            rows.append([draw(st.integers(1, 9))])  # a text-only row
            continue
        row = [draw(st.integers(0, 6))]
        for k in range(count):
            row.append(draw(st.sampled_from(IMAGE_KINDS[family])))
            last = k == count - 1
            # LLaVA needs text between images (single_row finds images as placeholder runs); the
            # last segment may be empty: the prompt then ends with an image (a visual query) for
            # LLaVA, with the </img> / <|vision_end|> delimiter for the others.
            row.append(draw(st.integers(0 if last or family != "llava" else 1, 6)))
        rows.append([seg for seg in row if seg != 0])
    side = draw(st.sampled_from(["left", "right"]))
    return side, rows


ratio = st.one_of(st.sampled_from([1.0, 0.5, 0.25, 0.1]), st.floats(0.01, 1.0))


@st.composite
def schedules(draw):
    """PyramidDrop options valid for 8 layers, in any of the three forms."""
    form = draw(st.sampled_from(["official", "short", "fractions"]))
    if form == "short":
        options = {"stages": draw(st.integers(2, NUM_LAYERS))}
        if draw(st.booleans()):
            options["ratio"] = draw(ratio)
        return options
    k = draw(st.integers(1, 4))
    layers = sorted(draw(st.lists(st.integers(1, NUM_LAYERS - 1), min_size=k, max_size=k, unique=True)))
    ratios = sorted(draw(st.lists(ratio, min_size=k, max_size=k)), reverse=True)
    if form == "official":
        return {"layer_list": layers, "image_token_ratio_list": ratios}
    return {"layer_fractions": [(layer + 0.5) / NUM_LAYERS for layer in layers], "image_token_ratio_list": ratios}


def cases(family: str):
    return st.tuples(rows_of(family), schedules(), st.integers(0, 2**16))


def _inputs(family, case):
    (side, rows), options, seed = case
    return build_inputs(model_of(family), family, rows, side, seed), options


def _describe(inputs, family, per_layer):
    """Hypothesis events (shown by --hypothesis-show-statistics): which edge cases were drawn."""
    visual = visual_mask(inputs, family)
    real = inputs["attention_mask"].bool()
    event(f"batch={real.shape[0]}, padding={'right' if bool((~real[:, -1]).any()) else 'left/none'}")
    if bool((visual.sum(1) == 0).any()):
        event("a text-only row")
    if bool(visual.gather(1, last_real(inputs)[:, None]).any()):
        event("a visual query (prompt ends with an image)")
    if any(n == 0 for n, v in zip(per_layer[-1], visual.sum(1).tolist()) if v):
        event("a row keeps 0 visual tokens")
    if per_layer[-1] == per_layer[0]:
        event("nothing removed")


# ----------------------------------------------------------------------------------------------
# (a) batch invariance
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@ENGINE_PROPS
@given(data=st.data())
def test_property_batch_invariance(family, data):
    model = model_of(family)
    inputs, options = _inputs(family, data.draw(cases(family)))
    length = inputs["input_ids"].shape[1]
    with tokenprune.pruned(model, "pyramiddrop", **options) as handle, torch.no_grad():
        logits = model(**inputs).logits
        kept = kept_or_all(handle, inputs)
        visible = layer_visibility(handle.selection(), length, NUM_LAYERS)
        batch_last = at_positions(logits, kept, last_real(inputs))
        real = inputs["attention_mask"].bool()
        for b in range(real.shape[0]):
            alone = tm.single_row(inputs, b)
            out = model(**alone).logits
            mine = at_positions(out, kept_or_all(handle, alone), last_real(alone))[0]
            diff = record("property: batch invariance", f"{family}-sdpa-random", (mine - batch_last[b]).abs().max().item())
            assert diff <= TOL, f"row {b}: {diff}"
            # The same tokens at every layer (a text-only row alone has no selection: all kept).
            offset = int(real[b].nonzero()[0])  # left padding shifts positions; right padding does not
            positions = real[b].nonzero().flatten()
            selection = handle.selection()
            for layer in range(NUM_LAYERS):
                in_batch = visible[layer][b, positions]
                if selection:
                    own = layer_visibility(selection, alone["input_ids"].shape[1], NUM_LAYERS)[layer][0]
                    assert torch.equal(in_batch, own[positions - offset]), f"row {b} layer {layer}"
                else:
                    assert bool(in_batch.all()), f"text-only row {b} lost a token at layer {layer}"


# ----------------------------------------------------------------------------------------------
# (b) masked reference
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@ENGINE_PROPS
@given(data=st.data())
def test_property_masked_reference(family, data):
    model = model_of(family)
    inputs, options = _inputs(family, data.draw(cases(family)))
    with tokenprune.pruned(model, "pyramiddrop", **options) as handle, torch.no_grad():
        logits = model(**inputs).logits
        selection = handle.selection()
        kept = kept_or_all(handle, inputs)
    diff = max_masked_reference_diff(model, inputs, logits, selection, kept)
    record("property: masked reference", f"{family}-sdpa-random", diff)
    assert diff <= TOL


# ----------------------------------------------------------------------------------------------
# (c) selection invariants
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@ENGINE_PROPS
@given(data=st.data())
def test_property_selection_is_well_formed_and_follows_the_plan(family, data):
    model = model_of(family)
    inputs, options = _inputs(family, data.draw(cases(family)))
    with tokenprune.pruned(model, "pyramiddrop", **options) as handle, torch.no_grad():
        logits = model(**inputs).logits
        per_layer = check_selection(handle, inputs, family)
        stats = handle.stats
        kept = handle.kept_positions()
    assert stats.visual_tokens == per_layer
    _describe(inputs, family, per_layer)
    if kept is None:  # nothing removed: full-length logits
        assert logits.shape[1] == inputs["input_ids"].shape[1]
        assert len(handle.selection()) == 1
    else:
        idx, valid = kept
        assert idx.shape == valid.shape == logits.shape[:2]
        assert torch.equal(idx, handle.selection()[-1][1])
