"""Baselines that ignore content: a seeded random ranking and a uniform stride."""

from __future__ import annotations

import torch
from torch import Tensor

from ..interfaces import ALL_SITES, Reducer, Reduction, ScoreContext, Scorer

__all__ = ["RandomScorer", "ConstantScorer", "StrideDrop", "stride_mask"]


def _to_device(t: Tensor, device: torch.device) -> Tensor:
    """``t`` (host draws, never written again) on ``device``, without waiting for the device.

    A plain ``.to("cuda")`` of pageable host memory waits until every kernel already queued has run:
    inside a layer hook that is the same pipeline drain as a device->host read. From pinned memory
    with ``non_blocking=True`` the copy is queued like a kernel instead.
    """
    if t.device.type == "cpu" and device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


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
        counts = getattr(ctx, "visual_counts", None)
        if counts is not None:  # the counts are on the host: draw there, place the draws on the device
            return self._placed(ctx, counts)
        scores = torch.zeros(ctx.visual.shape, dtype=torch.float64)
        visual = ctx.visual.cpu()
        for b in range(visual.shape[0]):
            slots = visual[b].nonzero().squeeze(1)
            scores[b, slots] = self._draws(ctx.layer_index, len(slots))
        return scores.to(ctx.visual.device)

    def _draws(self, layer: int, count: int) -> Tensor:
        """The ``count`` draws of a sample holding ``count`` visual tokens at ``layer`` (CPU, float64)."""
        key = (self.seed * 1_000_003 + layer * 10_007 + count) % (2**63 - 1)
        return torch.rand(count, generator=torch.Generator().manual_seed(key), dtype=torch.float64)

    def _placed(self, ctx: ScoreContext, counts: tuple[int, ...]) -> Tensor:
        """The same scores without a device read: the ``j``-th visual slot of a row takes the ``j``-th draw."""
        visual = ctx.visual
        width = max(counts, default=0)
        if width == 0:
            return torch.zeros(visual.shape, dtype=torch.float64, device=visual.device)
        draws = torch.zeros(len(counts), width, dtype=torch.float64)
        for b, count in enumerate(counts):
            draws[b, :count] = self._draws(ctx.layer_index, count)
        rank = (visual.long().cumsum(1) - 1).clamp(0, width - 1)
        return torch.where(visual, _to_device(draws, visual.device).gather(1, rank), 0.0)

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

    Computed for all rows at once on the device, with no host read: the ``j``-th pick is evaluated the
    way ``torch.linspace`` evaluates its ``j``-th point in float64 (``j * step`` for the first half,
    ``end - (k - 1 - j) * step`` for the second), so the picks are exactly ``linspace``'s, row by row.
    """
    batch, n = candidates.shape
    device = candidates.device
    total = candidates.sum(1, keepdim=True)  # (B, 1) candidates per row
    k = torch.minimum(n_keep.to(device).view(batch, 1), total)  # (B, 1) picks per row
    j = torch.arange(n, device=device).unsqueeze(0)  # (1, n) pick index
    end = (total - 1).to(torch.float64)
    step = end / (k - 1).clamp(min=1).to(torch.float64)
    first_half = j < k // 2
    point = torch.where(first_half, j * step, end - (k - 1 - j) * step)
    point = torch.where(k == 1, 0.0, point)  # linspace with one point gives its start
    picks = point.round().long().clamp(0, n - 1)  # rank among the row's candidates
    chosen = torch.zeros(batch, n + 1, dtype=torch.bool, device=device)
    chosen.scatter_(1, torch.where(j < k, picks, n), True)  # unused picks land in the spare column n
    rank = (candidates.long().cumsum(1) - 1).clamp(min=0)
    return candidates & chosen[:, :n].gather(1, rank)


class StrideDrop(Reducer):
    """Keep an evenly spaced subset of the candidates (a uniform stride); scores are ignored."""

    sites = ALL_SITES
    exact_count = True

    def reduce(self, ctx: ScoreContext, scores: Tensor, candidates: Tensor, n_keep: Tensor) -> Reduction:
        return Reduction(keep=stride_mask(candidates, n_keep))

    def __repr__(self) -> str:
        return "StrideDrop()"
