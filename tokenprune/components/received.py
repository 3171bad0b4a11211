"""Scorer for encoders without a class token: the attention each token receives."""

from __future__ import annotations

from torch import Tensor

from ..errors import UnsupportedFeatureError
from ..interfaces import ScoreContext, Scorer

__all__ = ["ReceivedAttentionScorer"]


class ReceivedAttentionScorer(Scorer):
    """Mean attention each token receives, over every query and head, recomputed from the block's
    own norm and q/k projections (for SigLIP-style towers without [CLS]; the VisionZip/VisPruner
    convention for such encoders). Vision encoders only."""

    def score(self, ctx: ScoreContext) -> Tensor:
        received = getattr(ctx, "received_attention", None)
        if received is None:
            raise UnsupportedFeatureError(
                "ReceivedAttentionScorer needs every query of a vision-encoder block; inside an LLM use "
                "QueryAttentionScorer (attention of the instruction tokens)."
            )
        return received()

    def __repr__(self) -> str:
        return "ReceivedAttentionScorer()"
