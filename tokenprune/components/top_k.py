"""Reducers that remove tokens."""

from __future__ import annotations

import torch
from torch import Tensor

from ..interfaces import ALL_SITES, Reducer, Reduction, ScoreContext

__all__ = ["TopKDrop", "top_k_mask"]


def top_k_mask(scores: Tensor, candidates: Tensor, n_keep: Tensor) -> Tensor:
    """``(B, n)`` mask of the ``n_keep[b]`` highest-scoring candidates of every row.

    A stable sort makes ties resolve to the earlier slot, so a row's choice never depends on the
    other rows of the batch (batch invariance) nor on the sort kernel.
    """
    # Full precision: float64 scores must not tie at float32 resolution.
    masked = scores.to(torch.promote_types(scores.dtype, torch.float32)).masked_fill(~candidates, float("-inf"))
    order = torch.sort(masked, dim=-1, descending=True, stable=True).indices
    # Candidates before non-candidates, even a candidate scored -inf (a log-space scorer may emit it).
    first = torch.sort((~candidates).gather(-1, order).int(), dim=-1, stable=True).indices
    order = order.gather(-1, first)
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
    return (rank < n_keep.to(rank.device).unsqueeze(-1)) & candidates


class TopKDrop(Reducer):
    """Keep the top-k candidates by score, drop the rest; kept tokens stay in their original order."""

    sites = ALL_SITES
    exact_count = True

    def reduce(self, ctx: ScoreContext, scores: Tensor, candidates: Tensor, n_keep: Tensor) -> Reduction:
        return Reduction(keep=top_k_mask(scores, candidates, n_keep))

    def __repr__(self) -> str:
        return "TopKDrop()"
