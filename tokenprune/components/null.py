"""A scorer for reducers that decide by themselves (e.g. bipartite matching)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..interfaces import ALL_SITES, ScoreContext, Scorer

__all__ = ["NullScorer"]


class NullScorer(Scorer):
    """All-zero scores at no cost, for reducers that ignore scores (`BipartiteMerge`)."""

    sites = ALL_SITES

    def score(self, ctx: ScoreContext) -> Tensor:
        return torch.zeros(ctx.hidden.shape[:2], device=ctx.hidden.device)

    def __repr__(self) -> str:
        return "NullScorer()"
