"""Reducers that remove tokens."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..interfaces import ALL_SITES, Reducer, Reduction, ScoreContext

__all__ = ["TopKDrop", "top_k_columns", "top_k_mask"]


def _ranking_key(scores: Tensor) -> Tensor:
    """Scores negated in full precision (float64 scores must not tie at float32 resolution), a NaN
    score as -inf: an ascending stable sort of the key ranks the highest score first, a NaN first of all."""
    key = scores.to(torch.promote_types(scores.dtype, torch.float32)).neg()
    return key.nan_to_num(nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))


def top_k_columns(scores: Tensor, k: int) -> Tensor:
    """``(B, k)`` ascending columns of the ``k`` highest scores of every row, every column a candidate.

    The same ranking as `top_k_mask` (one stable sort of the same key; it puts non-candidates after
    every candidate, so on a span of candidates the first ``k`` are the same), returned as columns.
    """
    order = torch.sort(_ranking_key(scores), dim=-1, stable=True).indices[..., :k]
    return torch.sort(order, dim=-1).values


def top_k_mask(scores: Tensor, candidates: Tensor, n_keep: Tensor, counts: Sequence[int] | None = None) -> Tensor:
    """``(B, n)`` mask of the ``n_keep[b]`` highest-scoring candidates of every row.

    A stable sort makes ties resolve to the earlier slot, so a row's choice never depends on the
    other rows of the batch (batch invariance) nor on the sort kernel. One ascending sort of the
    negated scores ranks everything: non-candidates are NaN there, which an ascending sort puts
    last, after a candidate scored -inf (a log-space scorer may emit it); a NaN score ranks first,
    as in a descending sort.

    ``counts``: ``n_keep`` on the host, when the caller has it; if every row keeps the same number, an
    eager call marks the first ``k`` of the ranking directly (no rank pass).
    """
    key = _ranking_key(scores).masked_fill(~candidates, float("nan"))
    order = torch.sort(key, dim=-1, stable=True).indices
    # Not while compiling: a host count would be a constant of the graph (a recompile per count), and
    # a compiled rank pass fuses into a few kernels anyway.
    if not torch.compiler.is_compiling() and counts is not None and len(set(counts)) == 1:
        return torch.zeros_like(candidates).scatter_(-1, order[..., : counts[0]], True) & candidates
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
    return (rank < n_keep.to(rank.device).unsqueeze(-1)) & candidates


class TopKDrop(Reducer):
    """Keep the top-k candidates by score, drop the rest; kept tokens stay in their original order."""

    sites = ALL_SITES
    exact_count = True

    def reduce(self, ctx: ScoreContext, scores: Tensor, candidates: Tensor, n_keep: Tensor) -> Reduction:
        return Reduction(keep=top_k_mask(scores, candidates, n_keep, getattr(ctx, "keep_counts", None)))

    def keep_columns(self, ctx: ScoreContext, scores: Tensor, k: int) -> Tensor | None:
        if type(self).reduce is not TopKDrop.reduce:  # a subclass that chooses otherwise must not inherit this
            return None
        return top_k_columns(scores, k)

    def __repr__(self) -> str:
        return "TopKDrop()"
