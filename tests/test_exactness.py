"""The exactness contract (docs/concepts.md) for every LLaVA-family adapter × attention backend × layout.

Cells: families {llava, llava_next, llava_onevision} × {sdpa in float64, eager in float32} ×
layouts {single, left_padded, right_padded, mixed (1/2/0 images)}. Eager runs in float32 because
HF's eager attention softmaxes in float32, which turns float64 padded rows into NaN.

1. identity: keep-all is bitwise identical (logits, generated ids, raw decode logits); so is
   `unwrap` after a pruned run.
2. cache: cached generation with drops == a no-cache forward replaying the same selection.
3. batch invariance: every sample of a mixed batch == the same sample alone.
4. masked reference: dropping == the full-length model with the dropped tokens masked as keys.
5. training: loss and gradients == the masked reference; gradient reaches the vision tower;
   gradient checkpointing on/off identical.
6. scores: recomputed attention rows == eager attention probabilities.
"""

from __future__ import annotations

import functools

import pytest
import torch

import tokenprune
import tiny_models as tm
from exactness import (
    LogitTap,
    record,
    RecordingScorer,
    at_positions,
    last_positions,
    masked_reference_hooks,
    replay_strategy,
)
from tokenprune import Strategy
from tokenprune.components import QueryAttentionScorer, StageScheduler, TopKDrop

STRATEGY = "pyramiddrop"
"""The strategy this full matrix runs (test_exactness_coverage.py reads it: its exactness row)."""
FAMILIES = list(tm.FAMILIES)
BACKENDS = {"sdpa": (torch.float64, 1e-10), "eager": (torch.float32, 2e-4)}
LAYOUTS = ["single", "left_padded", "right_padded", "mixed"]
GEN_LAYOUTS = ["single", "left_padded", "mixed"]  # generation is defined for left padding
EXTRA_LAYOUTS = ["video", "multi_tile"]  # family-specific: images + videos in one batch, multi-tile images
BOUNDARIES, RATIOS = [2, 4, 6], [0.5, 0.25, 0.125]  # the default schedule on the 8-layer tiny models
NEW_TOKENS = 4


@functools.cache
def _model(family: str, attn: str):
    factory, _ = tm.FAMILIES[family]
    return factory(attn=attn, dtype=BACKENDS[attn][0])


@pytest.fixture
def case(request):
    """(model, inputs, tolerance, cell name) for a (family, attn, layout) cell; the model is unwrapped afterwards."""
    family, attn, layout = request.param
    model = _model(family, attn)
    inputs = tm.FAMILIES[family][1](model, layout=layout)
    yield model, inputs, BACKENDS[attn][1], f"{family}-{attn}-{layout}"
    if isinstance(getattr(model, "tokenprune", None), tokenprune.WrapHandle):
        tokenprune.unwrap(model)
    model.eval()


def cells(layouts):
    """Every family × backend × layout, plus each family's own extra layouts (left padded)."""
    return [
        pytest.param((f, a, l), id=f"{f}-{a}-{l}")
        for f in FAMILIES
        for a in BACKENDS
        for l in [*layouts, *(x for x in EXTRA_LAYOUTS if x in tm.LAYOUTS.get(f, ()))]
    ]


def visual_rows(model, inputs):
    """Rows that hold visual tokens, by the adapter's own visual ids."""
    ids = tokenprune.get_registry().adapter_for(model).locate(model).visual_token_ids
    return torch.isin(inputs["input_ids"], torch.tensor(ids)).any(1)


def generate(model, inputs, **kwargs):
    """Greedy generation with raw step logits."""
    inputs = {k: v for k, v in inputs.items() if k != "position_ids"}
    tap = LogitTap(model)
    out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, **kwargs)
    return out, [s[:, -1] for s in tap.close()]


def max_diff(a, b) -> float:
    return (a.double() - b.double()).abs().max().item()


# -- 1. identity ------------------------------------------------------------------------------
@pytest.mark.parametrize("case", cells(LAYOUTS), indirect=True)
def test_keep_all_is_bitwise_identity(case):
    model, inputs, _, cell = case
    ref_logits = model(**inputs).logits
    ref_ids, ref_steps = generate(model, inputs)
    tokenprune.wrap(model, STRATEGY, ratio=1.0)
    logits = model(**inputs).logits
    record("identity (keep-all)", cell, max_diff(logits, ref_logits))
    assert torch.equal(logits, ref_logits)
    ids, steps = generate(model, inputs)
    assert torch.equal(ids, ref_ids)
    assert all(torch.equal(a, b) for a, b in zip(steps, ref_steps))


@pytest.mark.parametrize("case", cells(["mixed"]), indirect=True)
def test_unwrap_after_pruned_run_is_bitwise_identity(case):
    model, inputs, _, cell = case
    ref_logits = model(**inputs).logits
    ref_ids, _ = generate(model, inputs)
    tokenprune.wrap(model, STRATEGY)
    pruned_logits = model(**inputs).logits
    generate(model, inputs)
    tokenprune.unwrap(model)
    assert pruned_logits.shape[1] < ref_logits.shape[1]  # the pruned run really removed tokens
    assert torch.equal(model(**inputs).logits, ref_logits)
    assert torch.equal(generate(model, inputs)[0], ref_ids)


# -- 2. cache ---------------------------------------------------------------------------------
def _extend(inputs, ids):
    """Inputs for a no-cache forward over the prompt + all generated tokens but the last.

    Per-token inputs grow with the text: the mask with ones, token-type ids with zeros (text).
    1-D positions continue from the mask; 3-D M-RoPE positions are left to the model to rebuild.
    """
    length = inputs["input_ids"].shape[1]
    extra = ids.shape[1] - 1 - length
    full = {k: v for k, v in inputs.items() if k != "position_ids"}
    full["input_ids"] = ids[:, :-1]
    for key, fill in (("attention_mask", 1), ("mm_token_type_ids", 0), ("token_type_ids", 0)):
        if key in inputs:
            tail = torch.full((ids.shape[0], extra), fill, dtype=inputs[key].dtype)
            full[key] = torch.cat([inputs[key], tail], dim=1)
    if inputs.get("position_ids") is not None and inputs["position_ids"].dim() == 2:
        full["position_ids"] = (full["attention_mask"].cumsum(1) - 1).clamp(min=0)
    return full


@pytest.mark.parametrize("positions", ["keep", "compact"])
@pytest.mark.parametrize("case", cells(GEN_LAYOUTS), indirect=True)
def test_cached_decode_equals_uncached_replay(case, positions):
    model, inputs, tol, cell = case
    if positions == "compact" and not tokenprune.get_registry().adapter_for(model).supports_compact_positions:
        with pytest.raises(tokenprune.UnsupportedFeatureError, match="compact"):
            tokenprune.wrap(model, STRATEGY, positions=positions)
        return
    tokenprune.wrap(model, STRATEGY, positions=positions)
    ids, steps = generate(model, inputs)
    selection = model.tokenprune.selection()
    assert len(selection) == 4, "the default schedule should have reduced at layers 2, 4 and 6"
    tokenprune.unwrap(model)

    strategy = replay_strategy(selection, BOUNDARIES, RATIOS)
    strategy = Strategy(strategy.scheduler, strategy.scorer, strategy.reducer, positions=positions, name="replay")
    tokenprune.wrap(model, strategy)
    full = _extend(inputs, ids)
    logits = model(**full, use_cache=False).logits
    replayed = model.tokenprune.selection()
    length = inputs["input_ids"].shape[1]
    for (layer, idx, valid), (layer2, idx2, valid2) in zip(selection, replayed):
        assert layer == layer2
        for b in range(idx.shape[0]):  # the replay kept exactly the recorded prompt tokens
            assert idx[b][valid[b]].tolist() == idx2[b][valid2[b] & (idx2[b] < length)].tolist()
    kept = model.tokenprune.kept_positions()
    last = last_positions(inputs["attention_mask"])
    for t, step in enumerate(steps):
        assert record(f"cache ({positions})", cell, max_diff(at_positions(logits, kept, last + t), step)) <= tol


# -- 3. batch invariance ----------------------------------------------------------------------
@pytest.mark.parametrize("case", cells(["left_padded", "mixed"]), indirect=True)
def test_batch_invariance(case):
    model, inputs, tol, cell = case
    tokenprune.wrap(model, STRATEGY)
    batch_logits = model(**inputs).logits
    batch_kept = model.tokenprune.kept_positions()
    batch_last = last_positions(inputs["attention_mask"])
    batch_ids, batch_steps = generate(model, inputs)
    rows = inputs["input_ids"].shape[0]
    for i in range(rows):
        alone = tm.single_row(inputs, i)
        logits = model(**alone).logits
        kept = model.tokenprune.kept_positions()
        last = last_positions(alone["attention_mask"])
        mine = at_positions(batch_logits, batch_kept, batch_last)[i]
        diff = record("batch invariance", cell, max_diff(mine, at_positions(logits, kept, last)[0]))
        assert diff <= tol, f"row {i} prefill"
        ids, steps = generate(model, alone)
        assert torch.equal(ids[0, -NEW_TOKENS:], batch_ids[i, -NEW_TOKENS:]), f"row {i} generated ids"
        for t, (a, b) in enumerate(zip(batch_steps, steps)):
            assert record("batch invariance", cell, max_diff(a[i], b[0])) <= tol, f"row {i} decode step {t}"


# -- 4. masked reference ----------------------------------------------------------------------
def _masked_reference(model, inputs, selection, **kwargs):
    handles = masked_reference_hooks(model, selection, inputs["attention_mask"])
    try:
        return model(**inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()


def masked_reference_gaps(model, inputs, wrap) -> tuple[float, float]:
    """``(gap to the masked reference, gap to the plain full model)`` of the kept rows' logits.

    ``wrap(model)`` attaches the strategy; the model is unwrapped before the references run. The
    second number is the negative control: the unmasked full model must disagree.
    """
    wrap(model)
    logits = model(**inputs).logits
    selection = model.tokenprune.selection()
    idx, valid = model.tokenprune.kept_positions()
    tokenprune.unwrap(model)
    reference = _masked_reference(model, inputs, selection).logits
    ref = reference.gather(1, idx.unsqueeze(-1).expand(-1, -1, reference.shape[-1]))
    diff = (logits - ref).abs().amax(-1)[valid]
    assert diff.numel() > 0, "no kept row to compare"
    plain = model(**inputs).logits.gather(1, idx.unsqueeze(-1).expand(-1, -1, reference.shape[-1]))
    return diff.max().item(), (logits - plain).abs().amax(-1)[valid].max().item()


@pytest.mark.parametrize("case", cells(LAYOUTS), indirect=True)
def test_dropping_equals_masked_reference(case):
    model, inputs, tol, cell = case
    gap, plain = masked_reference_gaps(model, inputs, lambda m: tokenprune.wrap(m, STRATEGY))
    assert record("masked reference", cell, gap) <= tol
    assert plain > 1e3 * tol  # negative control: the check has teeth


# -- 5. training ------------------------------------------------------------------------------
def _loss_and_grads(model, inputs):
    model.zero_grad(set_to_none=True)
    loss = model(**inputs).loss
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def check_training_against_masked_reference(model, inputs, wrap, tol: float, cell: str, prefix: str = "") -> int:
    """Train-mode loss and every gradient of ``wrap(model)`` equal the masked full-length reference
    on the same selection, and gradients reach the tower and projector. Returns the stage count."""
    inputs = tm.add_labels(inputs)
    model.train()
    wrap(model)
    loss, grads = _loss_and_grads(model, inputs)
    selection = model.tokenprune.selection()
    tokenprune.unwrap(model)
    handles = masked_reference_hooks(model, selection, inputs["attention_mask"])
    try:
        ref_loss, ref_grads = _loss_and_grads(model, inputs)
    finally:
        for h in handles:
            h.remove()
    assert torch.isfinite(loss)
    # The loss upcasts logits to float32 (transformers' ForCausalLMLoss), hence the float32 tolerance.
    delta = record(f"{prefix}training loss", cell, abs(loss.item() - ref_loss.item()))
    assert delta <= max(tol, 1e-6) * max(1.0, abs(ref_loss.item()))
    assert grads.keys() == ref_grads.keys()
    scale = max(g.abs().max().item() for g in ref_grads.values())
    worst = record(f"{prefix}training grads", cell, max(max_diff(grads[n], ref_grads[n]) for n in grads))
    assert worst <= max(tol, 1e-6) * max(1.0, scale)
    vision = [g for n, g in grads.items() if "language_model" not in n and "lm_head" not in n]  # tower + projector
    assert vision and sum(g.abs().sum().item() for g in vision) > 0
    return len(selection)


@pytest.mark.parametrize("case", cells(LAYOUTS), indirect=True)
def test_training_matches_masked_reference(case):
    model, inputs, tol, cell = case
    stages = check_training_against_masked_reference(model, inputs, lambda m: tokenprune.wrap(m, STRATEGY), tol, cell)
    assert stages == 4


@pytest.mark.parametrize("case", cells(["mixed"]), indirect=True)
def test_gradient_checkpointing_is_identical(case):
    model, inputs, tol, cell = case
    inputs = tm.add_labels(inputs)
    model.train()
    tokenprune.wrap(model, STRATEGY)
    loss, grads = _loss_and_grads(model, inputs)
    for reentrant in (True, False):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": reentrant})
        try:
            gc_loss, gc_grads = _loss_and_grads(model, inputs)
        finally:
            model.activation_checkpointing_disable()
        assert torch.equal(loss, gc_loss)
        # Not bitwise: transformers itself differs by ~1e-16 with GC on/off on OneVision's vision
        # tower (gradient accumulation order), unwrapped too.
        assert record("grad checkpointing", cell, max(max_diff(grads[n], gc_grads[n]) for n in grads)) <= tol


def test_training_query_is_token_before_each_answer_span():
    model = _model("llava", "sdpa")
    inputs = tm.add_labels(tm.llava_inputs(model, layout="left_padded"))
    labels = inputs["labels"].clone()
    # A second answer span in row 0 (multi-turn data): the token before it is a second query.
    first = [int((row != -100).nonzero()[0]) for row in labels]
    labels[0, first[0] - 3] = inputs["input_ids"][0, first[0] - 3]
    inputs["labels"] = labels
    recorder = RecordingScorer(QueryAttentionScorer())
    with tokenprune.pruned(model, Strategy(StageScheduler([2], [0.5]), recorder, TopKDrop())):
        model(**inputs)
    queries, weights = recorder.queries[2]
    assert queries[0].tolist() == [first[0] - 4, first[0] - 1]
    assert weights[0].tolist() == [0.5, 0.5]
    assert queries[1, 0].item() == first[1] - 1 and weights[1].tolist() == [1.0, 0.0]
    # Inference (no labels): the last prompt token.
    recorder.queries.clear()
    with tokenprune.pruned(model, Strategy(StageScheduler([2], [0.5]), recorder, TopKDrop())):
        model(**{k: v for k, v in inputs.items() if k != "labels"})
    queries, weights = recorder.queries[2]
    assert queries[:, 0].tolist() == last_positions(inputs["attention_mask"]).tolist()


# -- 6. scores --------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["single", "left_padded", "mixed"])
@pytest.mark.parametrize("family", FAMILIES)
def test_scores_equal_eager_attention(family, layout):
    model = _model(family, "eager")
    inputs = tm.FAMILIES[family][1](model, layout=layout)
    last = last_positions(inputs["attention_mask"])
    rows = torch.arange(last.shape[0])

    # (a) full sequence: the scorer at layer 2 vs. layer 2's eager attention of the unwrapped model.
    recorder = RecordingScorer(QueryAttentionScorer())
    with tokenprune.pruned(model, Strategy(StageScheduler([2], [0.5]), recorder, TopKDrop())):
        model(**inputs)
    eager = model(**inputs, output_attentions=True).attentions[2]  # (B, H, L, L)
    expected = eager[rows, :, last].mean(1)
    score, positions = recorder.seen[2]
    has_visual = visual_rows(model, inputs)
    cell = f"{family}-eager-{layout}"
    assert record("scores vs eager (full)", cell, max_diff(score[has_visual], expected[has_visual])) <= 1e-6

    # (b) already shrunk: the scorer at layer 4 (after a drop at 2) vs. layer 4's eager attention of a
    # model that drops only at 2 (same selection, so layer 4 sees the same sequence).
    recorder = RecordingScorer(QueryAttentionScorer())
    with tokenprune.pruned(model, Strategy(StageScheduler([2, 4], [0.5, 0.25]), recorder, TopKDrop())):
        model(**inputs)
    with tokenprune.pruned(model, Strategy(StageScheduler([2], [0.5]), QueryAttentionScorer(), TopKDrop())) as h:
        attn4 = model(**inputs, output_attentions=True).attentions[4]
        idx, valid = h.kept_positions()
    slot = ((idx == last[:, None]) & valid).int().argmax(1)
    expected = attn4[rows, :, slot].mean(1)
    score, positions = recorder.seen[4]
    assert torch.equal(positions, idx)
    assert record("scores vs eager (shrunk)", cell, max_diff(score[has_visual], expected[has_visual])) <= 1e-6


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_without_position_ids(family):
    """transformers shares one (1, L) rotary table across the batch when no position_ids are given."""
    model = _model(family, "sdpa")
    inputs = tm.FAMILIES[family][1](model, layout="right_padded")
    inputs.pop("position_ids", None)
    reference = model(**inputs).logits
    with tokenprune.pruned(model, STRATEGY, ratio=1.0):
        assert torch.equal(model(**inputs).logits, reference)
    with tokenprune.pruned(model, STRATEGY) as handle:
        logits = model(**inputs).logits
        assert handle.stats.visual_tokens[-1] == [v // 8 for v in handle.stats.num_visual]
    assert torch.isfinite(logits).all()
