"""Inputs with arbitrary batch layouts for the tiny models, and independent checks of a selection.

The tiny-model builders (`tiny_models.llava_inputs`, `tiny_models_qwen_internvl.qwen2_vl_inputs`,
`internvl_inputs`, ...) build a batch from a named layout spec ``(padding side, rows)``, where a row
is a list of segments (int n = n random text tokens, "I" = one image, "W" = one wide Qwen image,
"M" = one multi-tile InternVL image). `build_inputs` registers an arbitrary spec under a temporary
name and calls the family's own builder, so the ids, pixels, grids and position ids are exactly
what those builders (and so the processors they mirror) produce; nothing of them is copied here.

Checks here use only ``input_ids`` / ``attention_mask`` and the public handle (`selection`,
`plan`, `kept_positions`), never the engine's own bookkeeping.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import tiny_models as tm
import tiny_models_qwen_internvl as tmq
import torch
from exactness import masked_reference_hooks
from torch import Tensor

Row = list  # segments: int | "I" | "W" | "M"

_counter = itertools.count()


def _spec_tables(family: str) -> tuple[dict, dict]:
    """(spec dict, layouts dict) that the family's builder validates the layout name against."""
    if family in tmq.QWEN_FAMILIES:
        return tmq._QWEN_SPECS, tmq.LAYOUTS
    if family in tmq.INTERNVL_FAMILIES:
        return tmq._INTERNVL_SPECS, tmq.LAYOUTS
    return tm._LAYOUT_SPECS, tm.LAYOUTS


@contextmanager
def temporary_layout(family: str, side: str, rows: Sequence[Row]) -> Iterator[str]:
    """Register ``(side, rows)`` as a layout of ``family`` for the duration of the block."""
    specs, layouts = _spec_tables(family)
    name = f"_custom_{next(_counter)}"
    specs[name] = (side, [list(r) for r in rows])
    before = layouts[family]
    layouts[family] = (*before, name)
    try:
        yield name
    finally:
        layouts[family] = before
        specs.pop(name, None)


def build_inputs(model, family: str, rows: Sequence[Row], side: str = "left", seed: int = 0) -> dict:
    """The family's own builder run on a custom layout.

    LLaVA rows must separate images by text (`tiny_models.single_row` finds images as placeholder
    runs); Qwen and InternVL spans carry delimiters, so images may be adjacent there.
    """
    _, builder = tm.FAMILIES[family]
    with temporary_layout(family, side, rows) as name:
        return builder(model, layout=name, seed=seed)


# ----------------------------------------------------------------------------------------------
# Independent facts about a batch
# ----------------------------------------------------------------------------------------------
def visual_mask(inputs: dict, family: str) -> Tensor:
    """``(B, L)`` real visual placeholder positions, from the ids alone."""
    ids = inputs["input_ids"]
    return torch.isin(ids, torch.tensor(tm.VISUAL_IDS[family])) & inputs["attention_mask"].bool()


def last_real(inputs: dict) -> Tensor:
    """``(B,)`` original position of each row's last real token (the inference query)."""
    mask = inputs["attention_mask"].bool()
    return torch.where(mask, torch.arange(mask.shape[1]), -1).max(1).values


def check_selection(handle, inputs: dict, family: str) -> list[list[int]]:
    """Assert the selection of the handle's last forward is well formed; return visual counts per layer.

    Per stage and row: kept positions ascend strictly (so unique), are real tokens, include every
    real non-visual token and the query (last real token); kept visual tokens are visual positions;
    and at every layer the row holds exactly the planned number of visual tokens (a visual query is
    never dropped, so a row whose plan reaches 0 may keep that one query token).
    """
    visual = visual_mask(inputs, family)
    real = inputs["attention_mask"].bool()
    query = last_real(inputs)
    num_visual = visual.sum(1).tolist()
    plan = handle.plan(num_visual)
    selection = handle.selection()
    assert selection, "no selection recorded for a forward with visual tokens"
    assert selection[0][0] == 0
    layers = [layer for layer, _, _ in selection]
    assert layers == sorted(set(layers)), layers
    assert set(layers[1:]) <= set(plan.layers), (layers, plan.layers)
    batch, length = real.shape
    per_stage_counts = {}
    for layer, idx, valid in selection:
        assert idx.shape == valid.shape and idx.shape[0] == batch
        counts = []
        for b in range(batch):
            kept = idx[b][valid[b]].tolist()
            assert all(x < y for x, y in itertools.pairwise(kept)), f"layer {layer} row {b}: not ascending {kept}"
            assert all(0 <= p < length and bool(real[b, p]) for p in kept), f"layer {layer} row {b}: kept a pad"
            kept_set = set(kept)
            text = (real[b] & ~visual[b]).nonzero().flatten().tolist()
            assert set(text) <= kept_set, f"layer {layer} row {b}: dropped text {sorted(set(text) - kept_set)}"
            assert int(query[b]) in kept_set, f"layer {layer} row {b}: dropped the query"
            kept_visual = [p for p in kept if bool(visual[b, p])]
            assert len(kept) == len(text) + len(kept_visual)  # everything kept is text or visual
            counts.append(len(kept_visual))
        per_stage_counts[layer] = counts
    per_layer = []
    current = per_stage_counts[0]
    for layer in range(plan.num_layers):
        current = per_stage_counts.get(layer, current)
        per_layer.append(list(current))
    for layer, planned in enumerate(plan.tokens_per_layer()):
        for b, want in enumerate(planned):
            visual_query = bool(visual[b, query[b]])
            expected = max(want, 1) if visual_query and num_visual[b] else want
            assert per_layer[layer][b] == expected, (layer, b, per_layer[layer][b], want)
    return per_layer


def masked_reference(model, inputs: dict, selection) -> Tensor:
    """Logits of the UNWRAPPED model with the tokens each stage removed masked out as keys."""
    handles = masked_reference_hooks(model, selection, inputs["attention_mask"])
    try:
        with torch.no_grad():
            return model(**inputs).logits
    finally:
        for h in handles:
            h.remove()


def kept_or_all(handle, inputs: dict) -> tuple[Tensor, Tensor]:
    """``(positions, valid)`` of the last forward's output rows (all positions when nothing was removed)."""
    kept = handle.kept_positions()
    if kept is not None:
        return kept
    mask = inputs["attention_mask"].bool()
    return torch.arange(mask.shape[1]).expand_as(mask), mask


def max_masked_reference_diff(model, inputs: dict, logits: Tensor, selection, kept: tuple[Tensor, Tensor]) -> float:
    """Largest |logit difference| over real output rows between a pruned run and its masked reference.

    ``model`` must be unwrapped. ``logits`` and ``kept`` come from the pruned run.
    """
    idx, valid = kept
    reference = masked_reference(model, inputs, selection)
    ref = reference.gather(1, idx.unsqueeze(-1).expand(-1, -1, reference.shape[-1]))
    real = valid & inputs["attention_mask"].bool().gather(1, idx)
    return (logits - ref).abs().amax(-1)[real].max().item()
