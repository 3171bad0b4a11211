"""VidCom2: more tokens for unique frames, and each frame's most distinctive tokens, before the LLM.

Liu et al., "Video Compression Commander: Plug-and-Play Inference Acceleration for Video Large
Language Models", EMNLP 2025, arXiv:2505.14454; vLLM's ``--video-retention-ratio``. Written from the
paper and the official code's conventions (`tokenprune.components.frame_uniqueness`; nothing copied).

Every video keeps ``max(frames, int(tokens * ratio))`` tokens, split over its frames (temporal
patches) by how unlike the whole video each frame is; within a frame the tokens least like both the
video and the frame stay. Still images pass whole; kept tokens keep their original positions. Runs on
Qwen2-VL / Qwen2.5-VL and LLaVA-OneVision videos.

Difference from the paper: the total per video is fixed by the grid and the ratio (the official code
rounds each frame's budget on its own, so its total varies slightly).
"""

from __future__ import annotations

from pydantic import Field

from ..components.frame_uniqueness import FrameUniquenessDrop
from ..components.null import NullScorer
from ..components.temporal import TemporalSelection
from ..vision_language import VisionLanguageStrategy
from ..config import StrategyConfig
from ..hookspecs import RegisterStrategy, hookimpl

__all__ = ["VidCom2Config", "build"]


class VidCom2Config(StrategyConfig):
    """VidCom2 options."""

    ratio: float = Field(0.25, gt=0.0, le=1.0, description="Share of each video's tokens kept (the paper's base retention 0.25).")


def build(config: VidCom2Config) -> VisionLanguageStrategy:
    """Projector-side frame-budgeted selection of every video."""
    return VisionLanguageStrategy(
        projector=TemporalSelection(config.ratio, NullScorer(), FrameUniquenessDrop()), name="vidcom2"
    )


@hookimpl
def tokenprune_register_strategies(register: RegisterStrategy) -> None:
    register(
        "vidcom2",
        VidCom2Config,
        build,
        description="Split a video's token budget over frames by uniqueness, keep each frame's most distinctive tokens (arXiv:2505.14454).",
    )
