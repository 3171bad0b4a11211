"""VisionZip: dominant tokens by [CLS] attention plus a few contextual tokens, before the projector.

Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language Models", CVPR 2025,
arXiv:2412.04467. Written from the paper and the project's research note (nothing copied).

The tower's feature layer is reduced before the projector: ``dominant`` tokens are the patches the
[CLS] token attends to most (recomputed with the tower block that would read the features,
`QueryAttentionScorer`); the rest merge into ``contextual`` tokens (`ContextualMerge`).

Differences from the paper: the counts are shares of the patch grid (``ratio`` kept, of which a
``contextual`` share is contextual), not absolute token counts; [CLS] is not forwarded to the LLM
(stock LLaVA drops it, and the count of kept tokens is all patches); contextual tokens stay at
their target's position in the raster instead of being appended after the dominant ones; towers
without [CLS] (SigLIP; Qwen2-VL / Qwen2.5-VL, where it is the attention each merged token receives
in the tower's last block) use the attention each patch receives (``scorer="received"``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..components import ContextualMerge, QueryAttentionScorer, ReceivedAttentionScorer
from ..composite import ProjectorSelection, VisionLanguageStrategy
from ..hookspecs import RegisterStrategy, hookimpl
from .projector_budget import ProjectorBudgetConfig

__all__ = ["VisionZipConfig", "build"]


class VisionZipConfig(ProjectorBudgetConfig):
    """VisionZip options."""

    ratio: float = Field(1 / 3, gt=0.0, le=1.0, description="Share of the patch tokens that reach the projector (192/576 by default).")
    contextual: float = Field(0.16, ge=0.0, lt=1.0, description="Share of the kept tokens that are contextual (30/192 in the paper).")
    scorer: Literal["cls", "received"] = Field(
        "cls", description='"cls": [CLS] attention (CLIP); "received": attention each patch receives (towers without [CLS]).'
    )


def build(config: VisionZipConfig) -> VisionLanguageStrategy:
    """Projector-side selection: [CLS]-attention dominant tokens + contextual merge."""
    scorer = QueryAttentionScorer() if config.scorer == "cls" else ReceivedAttentionScorer()
    return VisionLanguageStrategy(
        projector=ProjectorSelection(config.ratio, scorer, ContextualMerge(config.contextual)), name="visionzip"
    )


@hookimpl
def tokenprune_register_strategies(register: RegisterStrategy) -> None:
    register(
        "visionzip",
        VisionZipConfig,
        build,
        description="Keep [CLS]-attended dominant patches and merge the rest into contextual tokens before the projector (arXiv:2412.04467).",
    )
