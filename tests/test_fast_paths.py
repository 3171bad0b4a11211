"""The engine's fast paths give exactly what the general paths give.

Each boundary of the LLM engine takes shortcuts when the host knows something (every row keeps the same
number, no row needs fillers, no query token is visual, one shared rotary row) or uses a cheaper kernel
for the same result (a row ``index_select`` instead of an element ``gather``). These tests pin each
shortcut to the general computation, bit for bit, on random inputs.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenprune.components.top_k import TopKDrop, top_k_columns, top_k_mask
from tokenprune.engine.layout import select_slots
from tokenprune.engine.masks import gather_rows
from tokenprune.engine.plan import read_layout
from tokenprune.engine.selection import select, select_span
from tokenprune.engine.state import last_true
from tokenprune.interfaces import Reduction, ScoreContext, Scorer

PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _reference_gather(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The element-wise gather ``gather_rows`` replaced."""
    t = t.expand(idx.shape[0], *t.shape[1:]) if t.shape[0] == 1 else t
    view = idx.view(*idx.shape, *([1] * (t.dim() - 2))).expand(*idx.shape, *t.shape[2:])
    return t.gather(1, view)


@PROPS
@given(
    batch=st.integers(1, 3),
    length=st.integers(1, 9),
    picks=st.integers(1, 9),
    trailing=st.sampled_from([(), (4,), (2, 3)]),
    shared=st.booleans(),
    transposed=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_gather_rows_equals_element_gather(batch, length, picks, trailing, shared, transposed, seed):
    gen = torch.Generator().manual_seed(seed)
    rows = 1 if shared else batch
    t = torch.randn(rows, length, *trailing, generator=gen, dtype=torch.float64)
    if transposed and trailing:  # a view that cannot be flattened without a copy
        t = torch.randn(rows, *trailing[::-1], length, generator=gen, dtype=torch.float64).permute(
            0, -1, *range(len(trailing), 0, -1)
        )
    t.requires_grad_(True)
    idx = torch.randint(0, length, (batch, picks), generator=gen)
    got, want = gather_rows(t, idx), _reference_gather(t, idx)
    assert torch.equal(got, want)
    weights = torch.randn(got.shape, generator=gen, dtype=torch.float64)
    (g1,) = torch.autograd.grad((got * weights).sum(), t)
    (g2,) = torch.autograd.grad((want * weights).sum(), t)
    assert torch.equal(g1, g2)


@st.composite
def ranking_cases(draw):
    batch = draw(st.integers(1, 4))
    n = draw(st.integers(1, 12))
    value = st.one_of(
        st.integers(0, 3).map(float),
        st.floats(-1e6, 1e6, allow_nan=False, width=32),
        st.sampled_from([float("inf"), float("-inf"), float("nan")]),
    )
    scores = torch.tensor(draw(st.lists(st.lists(value, min_size=n, max_size=n), min_size=batch, max_size=batch)))
    candidates = torch.tensor(draw(st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=batch, max_size=batch)))
    k = draw(st.integers(0, n + 1))
    return scores.float(), candidates, k


@PROPS
@given(ranking_cases())
def test_top_k_host_counts_equal_rank_pass(case):
    scores, candidates, k = case
    n_keep = torch.full((scores.shape[0],), k)
    assert torch.equal(top_k_mask(scores, candidates, n_keep, [k] * scores.shape[0]), top_k_mask(scores, candidates, n_keep))


def test_top_k_ranks_nan_first_and_minus_infinity_before_non_candidates():
    nan, inf = float("nan"), float("inf")
    scores = torch.tensor([[1.0, nan, -inf, 5.0, 2.0]])
    candidates = torch.tensor([[True, True, True, False, True]])
    assert top_k_mask(scores, candidates, torch.tensor([1])).tolist() == [[False, True, False, False, False]]
    assert top_k_mask(scores, candidates, torch.tensor([4])).tolist() == [[True, True, True, False, True]]


@PROPS
@given(batch=st.integers(1, 4), n=st.integers(1, 14), width=st.integers(0, 14), seed=st.integers(0, 2**31 - 1))
def test_select_slots_full_equals_general(batch, n, width, seed):
    width = min(width, n)
    gen = torch.Generator().manual_seed(seed)
    keep = torch.zeros(batch, n, dtype=torch.bool)
    for b in range(batch):  # every row keeps exactly `width` real slots
        keep[b, torch.randperm(n, generator=gen)[:width]] = True
    valid = keep | (torch.rand(batch, n, generator=gen) < 0.5)
    fast, general = select_slots(keep, valid, width, full=True), select_slots(keep, valid, width)
    assert torch.equal(fast[0], general[0]) and torch.equal(fast[1], general[1])


@PROPS
@given(batch=st.integers(1, 4), n=st.integers(1, 12), queries=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_read_layout_counts_like_python(batch, n, queries, seed):
    gen = torch.Generator().manual_seed(seed)
    valid = torch.rand(batch, n, generator=gen) < 0.8
    visual = (torch.rand(batch, n, generator=gen) < 0.5) & valid
    query = torch.randint(0, n, (batch, queries), generator=gen)
    layout = read_layout(visual, valid, query)
    assert layout.num_visual == tuple(int(v) for v in visual.sum(1))
    assert layout.num_text == tuple(int(v) for v in (valid & ~visual).sum(1))
    assert layout.visual_queries == tuple(sum(bool(visual[b, p]) for p in set(query[b].tolist())) for b in range(batch))
    assert layout.padded == (not bool(valid.all()))


def _span_case(case, data):
    """A ranking case cut to one run of candidate slots: (scores, start, stop, k <= run length, candidate mask)."""
    scores, _, k = case
    batch, n = scores.shape
    start = data.draw(st.integers(0, n - 1))
    stop = data.draw(st.integers(start + 1, n))
    candidates = torch.zeros(batch, n, dtype=torch.bool)
    candidates[:, start:stop] = True
    return scores, start, stop, min(k, stop - start), candidates


@PROPS
@given(ranking_cases(), st.data())
def test_top_k_columns_equal_mask_over_a_span(case, data):
    """On a span of candidates the ranked columns are the mask's kept slots, whatever sits outside it."""
    scores, start, stop, k, candidates = _span_case(case, data)
    batch = scores.shape[0]
    mask = top_k_mask(scores, candidates, torch.full((batch,), k))
    columns = top_k_columns(scores[:, start:stop], k)
    assert columns.shape == (batch, k)
    assert torch.equal(columns + start, mask.nonzero()[:, 1].view(batch, k))


class _Fixed(Scorer):
    def __init__(self, scores):
        self.scores = scores

    def score(self, ctx):
        return self.scores


class _MaskOnlyTopK(TopKDrop):
    """The same choice through `reduce` only: a subclass that overrides `reduce` loses the ranked path."""

    def reduce(self, ctx, scores, candidates, n_keep):
        return Reduction(keep=top_k_mask(scores, candidates, n_keep))


@PROPS
@given(ranking_cases(), st.data())
def test_select_span_equals_select(case, data):
    """The ranked span path keeps the slots, features and validity the general selection keeps."""
    scores, start, stop, k, visual = _span_case(case, data)
    batch, n = scores.shape
    valid = torch.ones(batch, n, dtype=torch.bool)
    hidden = torch.randn(batch, n, 3, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    ctx = ScoreContext(layer_index=1, layer=None, hidden=hidden, positions=torch.arange(n).expand(batch, n),
                       valid=valid, visual=visual, query=torch.full((batch, 1), n - 1), query_weight=torch.ones(batch, 1),
                       keep_counts=(k,) * batch)  # fmt: skip
    n_keep = torch.full((batch,), k)
    width = n - (stop - start) + k
    want = select(ctx, _Fixed(scores), TopKDrop(), visual, n_keep, protected=valid & ~visual, width=width, full=True)
    for reducer in (TopKDrop(), _MaskOnlyTopK()):
        got = select_span(ctx, _Fixed(scores), reducer, n_keep, (start, stop), k)
        assert torch.equal(got.index, want.index) and torch.equal(got.valid, want.valid)
        assert torch.equal(got.features, want.features)
    assert _MaskOnlyTopK().keep_columns(ctx, scores, k) is None


@pytest.mark.parametrize(
    "rows, span",
    [
        ([[0, 1, 1, 1, 0]], (1, 4)),
        ([[1, 1, 0, 0], [1, 1, 0, 0]], (0, 2)),
        ([[0, 1, 0, 1, 0]], None),  # two runs
        ([[0, 1, 1, 0], [1, 1, 0, 0]], None),  # runs at different slots
        ([[0, 1, 1, 0], [0, 1, 0, 0]], None),  # different counts
        ([[0, 0, 0, 0]], None),  # no visual token
    ],
)
def test_read_layout_visual_span(rows, span):
    visual = torch.tensor(rows, dtype=torch.bool)
    valid = torch.ones_like(visual)
    query = torch.full((visual.shape[0], 1), visual.shape[1] - 1)
    assert read_layout(visual, valid, query).visual_span == span
    padded = valid.clone()
    padded[:, -1] = False  # padding, or a visual query, turns the span off
    assert read_layout(visual & padded, padded, query).visual_span is None
    if span is not None:
        assert read_layout(visual, valid, torch.full_like(query, span[0])).visual_span is None


@PROPS
@given(rows=st.lists(st.lists(st.booleans(), min_size=1, max_size=10), min_size=1, max_size=4).filter(
    lambda r: len({len(x) for x in r}) == 1
))
def test_last_true(rows):
    mask = torch.tensor(rows)
    want = [max((i for i, v in enumerate(row) if v), default=0) for row in rows]
    assert last_true(mask).tolist() == want


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_engine_takes_the_span_path_and_it_changes_nothing(family, monkeypatch):
    """A single image at batch 1 takes the ranked span path at every boundary, bit for bit the general
    path's logits and tokens; a left-padded batch (visual runs at different slots) does not take it."""
    import dataclasses

    import tiny_models as tm

    import tokenprune
    from tokenprune.engine import boundary, runtime

    model = tm.FAMILIES[family][0](attn="sdpa", dtype=torch.float64)
    tokenprune.wrap(model, "pyramiddrop")
    calls = []
    real_select_span = boundary.select_span
    monkeypatch.setattr(boundary, "select_span", lambda *a: calls.append(a[-1]) or real_select_span(*a))

    def run(layout):
        inputs = {k: v for k, v in tm.FAMILIES[family][1](model, layout=layout).items() if k != "position_ids"}
        with torch.no_grad():
            logits = model(**inputs).logits
            ids = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        return logits, ids

    fast = run("single")
    assert len(calls) == 2 * len(model.tokenprune.strategy.scheduler.plan(model.config.text_config.num_hidden_layers, [64]).layers)
    real_read = runtime.read_layout
    monkeypatch.setattr(runtime, "read_layout", lambda *a: dataclasses.replace(real_read(*a), visual_span=None))
    calls.clear()
    general = run("single")
    assert not calls
    assert torch.equal(fast[0], general[0]) and torch.equal(fast[1], general[1])
    monkeypatch.setattr(runtime, "read_layout", real_read)
    run("left_padded")
    assert not calls


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "qwen3_vl", "internvl_qwen2"])
@pytest.mark.parametrize("strategy", ["fastv", "dart"])
def test_scoring_with_the_layer_below_reads_its_cached_keys_bit_for_bit(family, strategy, monkeypatch):
    """FastV and DART score with the layer below the reduction layer: with a dynamic cache its keys are
    read from the cache (no norm, projection or rotation again), and the result is bitwise the no-cache
    run, which computes them (float32; Qwen3's per-head key norm included)."""
    import tiny_models as tm

    import tokenprune
    from tokenprune.engine import runtime

    reads = []
    real = runtime.prefill_keys
    monkeypatch.setattr(runtime, "prefill_keys", lambda *a: (lambda k: reads.append(k is not None) or k)(real(*a)))
    model = tm.FAMILIES[family][0](attn="sdpa", dtype=torch.float32)
    tokenprune.wrap(model, strategy)
    for layout in ("single", "left_padded"):
        inputs = {k: v for k, v in tm.FAMILIES[family][1](model, layout=layout).items() if k != "position_ids"}
        reads.clear()
        with torch.no_grad():
            cached = model(**inputs, use_cache=True).logits
            assert reads and all(reads)  # the cached keys were there, and used
            computed = model(**inputs, use_cache=False).logits
        assert torch.equal(cached, computed)
