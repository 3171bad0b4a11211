"""EVS: drop the video patches that barely change from the previous frame, before the LLM.

Bagrov et al., "Efficient Video Sampling: Pruning Temporally Redundant Tokens for Faster VLM
Inference", arXiv:2510.14624; vLLM's and SGLang's ``video_pruning_rate``. Written from the paper and
the serving engines' description (`tokenprune.components.static_patches`; nothing copied).

Each video keeps its first frame (temporal patch) whole and, of the rest, the tokens whose merged
features moved farthest (cosine distance) from the same position of the previous frame: in total
``max(rows*cols, int(tokens * ratio))`` tokens, a pure function of the grid and the rate. Still
images in the same batch pass whole. Kept tokens keep their original positions (Qwen's M-RoPE
(t, h, w); OneVision's 1-D ones).

``ratio`` is the kept share (vLLM's ``video_pruning_rate`` is ``1 - ratio``). Runs where the
projector-side selection runs on videos: Qwen2-VL and Qwen2.5-VL (a frame is a temporal patch after
the merger) and LLaVA-OneVision (a frame's 2x2-pooled grid; the video's newline feature stays).
"""

from __future__ import annotations

from pydantic import Field

from ..components.null import NullScorer
from ..components.static_patches import StaticPatchDrop
from ..components.temporal import TemporalSelection
from ..vision_language import VisionLanguageStrategy
from ..config import StrategyConfig
from ..hookspecs import RegisterStrategy, hookimpl

__all__ = ["EVSConfig", "build"]


class EVSConfig(StrategyConfig):
    """EVS options."""

    ratio: float = Field(0.3, gt=0.0, le=1.0, description="Share of each video's tokens kept (vLLM's video_pruning_rate = 1 - ratio; 0.3 is its 0.7).")


def build(config: EVSConfig) -> VisionLanguageStrategy:
    """Projector-side static-patch pruning of every video."""
    return VisionLanguageStrategy(projector=TemporalSelection(config.ratio, NullScorer(), StaticPatchDrop()), name="evs")


@hookimpl
def tokenprune_register_strategies(register: RegisterStrategy) -> None:
    register(
        "evs",
        EVSConfig,
        build,
        description="Drop video patches that barely change from the previous frame, first frame kept, before the LLM (arXiv:2510.14624).",
    )
