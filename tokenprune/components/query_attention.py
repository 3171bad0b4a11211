"""Scorers that rank tokens by the attention the instruction pays them."""

from __future__ import annotations

from torch import Tensor

from ..interfaces import ALL_SITES, LayerChoice, ScoreContext, Scorer

__all__ = ["QueryAttentionScorer"]


class QueryAttentionScorer(Scorer):
    """Attention from the last instruction token(s) to each token (PyramidDrop, FastV-style).

    At inference the query is the last prompt token; in training it is the token before each answer
    span, averaged (the official PyramidDrop convention). The attention is recomputed with the
    reduction layer's own norm, q/k projections and RoPE (see `ScoreContext.attention`).

    Args:
        layer: ``"current"`` (default, PyramidDrop: the layer that first sees the shrunk sequence) or
            ``"previous"`` (FastV's code: the layer below it).
    """

    sites = ALL_SITES

    def __init__(self, layer: LayerChoice = "current"):
        self.layer = layer

    def score(self, ctx: ScoreContext) -> Tensor:
        if self.layer == "current":
            return ctx.attention()
        return ctx.attention_from(ctx.query, ctx.query_weight, layer=self.layer)

    def __repr__(self) -> str:
        return "QueryAttentionScorer()" if self.layer == "current" else f"QueryAttentionScorer(layer={self.layer!r})"
