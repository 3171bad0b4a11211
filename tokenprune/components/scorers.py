"""Scorers that rank tokens by the attention the instruction pays them."""

from __future__ import annotations

from torch import Tensor

from ..interfaces import ScoreContext, Scorer

__all__ = ["QueryAttentionScorer"]


class QueryAttentionScorer(Scorer):
    """Attention from the last instruction token(s) to each token (PyramidDrop, FastV-style).

    At inference the query is the last prompt token; in training it is the token before each answer
    span, averaged (the official PyramidDrop convention). The attention is recomputed with the
    reduction layer's own norm, q/k projections and RoPE (see `ScoreContext.attention`).
    """

    def score(self, ctx: ScoreContext) -> Tensor:
        return ctx.attention()

    def __repr__(self) -> str:
        return "QueryAttentionScorer()"
