"""The content-blind baselines run on the device without host reads and equal their per-row definitions.

`stride_mask` (the uniform baseline's reducer) picks exactly what a per-row ``torch.linspace`` picks.
The reducer runs for all rows at once without reading anything back to the host (so the uniform
strategy passes the engine's no-host-read watch); the per-row loop below is the definition it must
reproduce, pick for pick, for any candidate pattern and any requested count (including 0, 1, and more
than the row holds).
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenprune.components.baselines import RandomScorer, stride_mask
from tokenprune.interfaces import ScoreContext


def _per_row(candidates: torch.Tensor, n_keep: torch.Tensor) -> torch.Tensor:
    keep = torch.zeros_like(candidates)
    for b in range(candidates.shape[0]):
        slots = candidates[b].nonzero().squeeze(1)
        k = min(int(n_keep[b]), len(slots))
        if k == 0:
            continue
        picks = torch.linspace(0, len(slots) - 1, k, dtype=torch.float64).round().long()
        keep[b, slots[picks]] = True
    return keep


@settings(max_examples=300, deadline=None)
@given(
    batch=st.integers(1, 4), n=st.integers(1, 800), density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1), extra=st.integers(0, 3),
)  # fmt: skip
def test_stride_mask_equals_per_row_linspace(batch, n, density, seed, extra):
    gen = torch.Generator().manual_seed(seed)
    candidates = torch.rand(batch, n, generator=gen) < density
    n_keep = torch.randint(0, n + 1 + extra, (batch,), generator=gen)
    keep = stride_mask(candidates, n_keep)
    assert torch.equal(keep, _per_row(candidates, n_keep))
    assert torch.equal(keep.sum(1), torch.minimum(n_keep, candidates.sum(1)))  # exactly the count asked for


def test_stride_mask_keeps_first_and_last_candidate():
    candidates = torch.tensor([[False, True, True, True, True, True, False, True]])
    keep = stride_mask(candidates, torch.tensor([3]))
    assert keep.nonzero()[:, 1].tolist() == [1, 3, 7]  # ranks 0, round(2.5) = 2 (half to even), 5


@settings(max_examples=100, deadline=None)
@given(batch=st.integers(1, 4), n=st.integers(1, 300), density=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_random_scores_from_host_counts_equal_the_per_row_draws(batch, n, density, seed):
    """Given the host counts (the LLM engine's plan), the seeded random ranking places the same draws."""
    gen = torch.Generator().manual_seed(seed)
    visual = torch.rand(batch, n, generator=gen) < density
    dummy = torch.zeros(batch, n)

    def context(counts):
        return ScoreContext(layer_index=5, layer=None, hidden=dummy, positions=dummy.long(), valid=visual,
                            visual=visual, query=dummy[:, :1].long(), query_weight=dummy[:, :1],
                            visual_counts=counts)  # fmt: skip

    scorer = RandomScorer(seed=7)
    per_row = scorer.score(context(None))
    placed = scorer.score(context(tuple(visual.sum(1).tolist())))
    assert torch.equal(per_row, placed)
