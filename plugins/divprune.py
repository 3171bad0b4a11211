"""DivPrune: keep the most diverse visual tokens (max-min diversity), before the LLM.

Alvar et al., "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models",
CVPR 2025, arXiv:2503.02175. Written from the paper (the reference code's licence is
non-commercial; nothing is copied from it).

The greedy max-min solver (`MaxMinDiversityDrop`) picks ``ratio`` of each image's tokens by cosine
distance; no attention is needed.

Differences from the paper: in LLaVA the selection runs on the tower's feature layer (what the
projector reads), not on the projected tokens, so the projector runs on fewer tokens; in InternVL
it runs on the projector's output, as in the paper, and in Qwen2-VL / Qwen2.5-VL on the patch
merger's output. Selection is per image, not global over the
whole prompt; kept tokens stay in raster order (the public code's sorted variant).
"""

from __future__ import annotations

from pydantic import Field

from ..components import MaxMinDiversityDrop, NullScorer
from ..vision_language import ProjectorSelection, VisionLanguageStrategy
from ..hookspecs import RegisterStrategy, hookimpl
from ..components.projector import ProjectorBudgetConfig

__all__ = ["DivPruneConfig", "build"]


class DivPruneConfig(ProjectorBudgetConfig):
    """DivPrune options."""

    ratio: float = Field(0.098, gt=0.0, le=1.0, description="Share of each image's tokens kept (the paper's 0.098 by default).")


def build(config: DivPruneConfig) -> VisionLanguageStrategy:
    """Projector-side selection by greedy max-min diversity."""
    return VisionLanguageStrategy(
        projector=ProjectorSelection(config.ratio, NullScorer(), MaxMinDiversityDrop()), name="divprune"
    )


@hookimpl
def tokenprune_register_strategies(register: RegisterStrategy) -> None:
    register(
        "divprune",
        DivPruneConfig,
        build,
        description="Keep the most diverse visual tokens (greedy max-min cosine distance) at the projector (arXiv:2503.02175).",
    )
