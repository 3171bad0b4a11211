"""The engine's fast paths give exactly what the general paths give.

Each boundary of the LLM engine takes shortcuts when the host knows something (every row keeps the same
number, no row needs fillers, no query token is visual, one shared rotary row) or uses a cheaper kernel
for the same result (a row ``index_select`` instead of an element ``gather``). These tests pin each
shortcut to the general computation, bit for bit, on random inputs.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenprune.components.top_k import top_k_mask
from tokenprune.engine.layout import select_slots
from tokenprune.engine.masks import gather_rows
from tokenprune.engine.plan import read_layout
from tokenprune.engine.state import last_true

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


@PROPS
@given(rows=st.lists(st.lists(st.booleans(), min_size=1, max_size=10), min_size=1, max_size=4).filter(
    lambda r: len({len(x) for x in r}) == 1
))
def test_last_true(rows):
    mask = torch.tensor(rows)
    want = [max((i for i, v in enumerate(row) if v), default=0) for row in rows]
    assert last_true(mask).tolist() == want
