"""DyCoke's temporal stage: drop the tokens that repeat an earlier frame of their 4-frame window.

Tao et al., "DyCoke: Dynamic Compression of Tokens for Fast Video Large Language Models", CVPR 2025,
arXiv:2411.15024. Written from the paper and the official code's conventions
(`tokenprune.components.window_redundancy`; nothing copied).

Stage 1 (token temporal merging, before the LLM): in each window of 4 frames (temporal patches)
the first is kept whole; frames 2 and 4 keep the ``ratio`` share of their tokens least similar to
frames 1 and 3, frame 3 the share least similar to frame 1. Still images pass whole; kept tokens
keep their original positions. Runs on Qwen2-VL / Qwen2.5-VL and LLaVA-OneVision videos.

Not implemented: stage 2, the dynamic KV-cache pruning during decoding (at every decode step the
visual tokens the last token attends to least are left out of attention, and may come back at a
later step). tokenprune's engine removes tokens once per prefill and shares one cache layout across
decode steps, so a per-step, reversible selection does not fit it; ``temporal_pyramiddrop`` with
``temporal="dycoke"`` combines this stage with one-shot in-LLM dropping instead.
"""

from __future__ import annotations

from pydantic import Field

from ..components.null import NullScorer
from ..components.temporal import TemporalSelection
from ..components.window_redundancy import WindowRedundancyDrop
from ..vision_language import VisionLanguageStrategy
from ..config import StrategyConfig
from ..hookspecs import RegisterStrategy, hookimpl

__all__ = ["DyCokeConfig", "build"]


class DyCokeConfig(StrategyConfig):
    """DyCoke (temporal stage) options."""

    ratio: float = Field(
        0.3, gt=0.0, le=1.0, description="Share of the tokens of each non-pivot frame kept (the official merging ratio 0.7 prunes 70%)."
    )


def build(config: DyCokeConfig) -> VisionLanguageStrategy:
    """Projector-side temporal merging of every video."""
    return VisionLanguageStrategy(
        projector=TemporalSelection(config.ratio, NullScorer(), WindowRedundancyDrop()), name="dycoke"
    )


@hookimpl
def tokenprune_register_strategies(register: RegisterStrategy) -> None:
    register(
        "dycoke",
        DyCokeConfig,
        build,
        description="Drop video tokens repeating an earlier frame of their 4-frame window, before the LLM (arXiv:2411.15024, stage 1).",
    )
