"""Scorers that read features (hidden states, keys) instead of attention: cheap, FlashAttention-safe."""

from __future__ import annotations

import torch
from torch import Tensor

from ..interfaces import ALL_SITES, LayerChoice, ScoreContext, Scorer

__all__ = ["L2NormScorer", "KeyNormScorer"]


class L2NormScorer(Scorer):
    """L2 norm of each token's hidden state entering the reduction layer (no attention needed)."""

    sites = ALL_SITES

    def score(self, ctx: ScoreContext) -> Tensor:
        return ctx.hidden.to(torch.promote_types(ctx.hidden.dtype, torch.float32)).norm(dim=-1)

    def __repr__(self) -> str:
        return "L2NormScorer()"


class KeyNormScorer(Scorer):
    """L1 norm of each token's post-rotary attention key, all heads (DART's "max K-norm" pivots).

    Args:
        layer: ``"previous"`` (default; DART reads the keys of layer K-1) or ``"current"``.
    """

    def __init__(self, layer: LayerChoice = "previous"):
        self.layer = layer

    def score(self, ctx: ScoreContext) -> Tensor:
        keys = ctx.keys(layer=self.layer)
        return keys.to(torch.promote_types(keys.dtype, torch.float32)).abs().sum(-1)

    def __repr__(self) -> str:
        return f"KeyNormScorer(layer={self.layer!r})"
