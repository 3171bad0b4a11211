"""Baselines that ignore content: a seeded random ranking and a uniform stride."""

from __future__ import annotations

import torch
from torch import Tensor

from ..interfaces import ALL_SITES, Reducer, Reduction, ScoreContext, Scorer

__all__ = ["RandomScorer", "ConstantScorer", "StrideDrop", "stride_mask"]


class RandomScorer(Scorer):
    """A random ranking of each sample's visual tokens, reproducible and batch-invariant.

    The scores of a sample depend only on ``(seed, reduction layer, number of visual tokens it still
    holds)``: the ``j``-th visual token gets the ``j``-th draw of a generator seeded from these. So a
    sample is ranked the same alone or in any batch, with any padding, on any device (draws are made
    on the CPU); a different ``seed`` gives a different ranking.
    """

    sites = ALL_SITES

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def score(self, ctx: ScoreContext) -> Tensor:
        scores = torch.zeros(ctx.visual.shape, dtype=torch.float64)
        visual = ctx.visual.cpu()
        for b in range(visual.shape[0]):
            slots = visual[b].nonzero().squeeze(1)
            key = (self.seed * 1_000_003 + ctx.layer_index * 10_007 + len(slots)) % (2**63 - 1)
            generator = torch.Generator().manual_seed(key)
            scores[b, slots] = torch.rand(len(slots), generator=generator, dtype=torch.float64)
        return scores.to(ctx.visual.device)

    def __repr__(self) -> str:
        return f"RandomScorer(seed={self.seed})"


class ConstantScorer(Scorer):
    """Every token scores 0: for reducers that choose by position alone (`StrideDrop`)."""

    sites = ALL_SITES

    def score(self, ctx: ScoreContext) -> Tensor:
        return torch.zeros(ctx.visual.shape, dtype=torch.float32, device=ctx.visual.device)

    def __repr__(self) -> str:
        return "ConstantScorer()"


def stride_mask(candidates: Tensor, n_keep: Tensor) -> Tensor:
    """``(B, n)``: of each row's ``N`` candidates (in order), keep those at ``round(linspace(0, N-1, k))``.

    Deterministic, keeps the first and the last candidate when ``k >= 2``, and spreads the rest evenly
    over the row-major token order (vtbench's ``identity`` baseline).
    """
    keep = torch.zeros_like(candidates)
    for b in range(candidates.shape[0]):
        slots = candidates[b].nonzero().squeeze(1)
        k = min(int(n_keep[b]), len(slots))
        if k == 0:
            continue
        picks = torch.linspace(0, len(slots) - 1, k, dtype=torch.float64).round().long() if k > 1 else torch.zeros(1, dtype=torch.long)
        keep[b, slots[picks.to(slots.device)]] = True
    return keep


class StrideDrop(Reducer):
    """Keep an evenly spaced subset of the candidates (a uniform stride); scores are ignored."""

    sites = ALL_SITES
    exact_count = True

    def reduce(self, ctx: ScoreContext, scores: Tensor, candidates: Tensor, n_keep: Tensor) -> Reduction:
        return Reduction(keep=stride_mask(candidates, n_keep))

    def __repr__(self) -> str:
        return "StrideDrop()"
