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
in the tower's last block) use the attention each patch receives. The default ``scorer="auto"``
picks per tower: [CLS] attention where the tower has a class token, received attention where it
has none; ``"cls"`` and ``"received"`` force one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from torch import Tensor

from ..components import ContextualMerge, QueryAttentionScorer, ReceivedAttentionScorer
from ..vision_language import ProjectorSelection, VisionLanguageStrategy
from ..encoder.context import EncoderContext
from ..hookspecs import RegisterStrategy, hookimpl
from ..interfaces import Scorer, ScoreContext
from ..components.projector import ProjectorBudgetConfig

__all__ = ["VisionZipConfig", "ClassOrReceivedAttentionScorer", "build"]


class VisionZipConfig(ProjectorBudgetConfig):
    """VisionZip options."""

    ratio: float = Field(1 / 3, gt=0.0, le=1.0, description="Share of the patch tokens that reach the projector (192/576 by default).")
    contextual: float = Field(0.16, ge=0.0, lt=1.0, description="Share of the kept tokens that are contextual (30/192 in the paper).")
    scorer: Literal["auto", "cls", "received"] = Field(
        "auto",
        description='"cls": [CLS] attention (CLIP); "received": attention each patch receives (towers without '
        '[CLS]: SigLIP, Qwen2-VL); "auto": "cls" where the tower has a class token, else "received".',
    )


class ClassOrReceivedAttentionScorer(Scorer):
    """[CLS] attention where the encoder block has a class token, else the attention each patch receives.

    VisionZip's own rule for towers without [CLS] (SigLIP), decided per forward from the encoder
    context, so one configuration runs on CLIP-based LLaVA and on Qwen2-VL alike.
    """

    sites = frozenset({"encoder", "projector"})

    def __init__(self) -> None:
        self._cls, self._received = QueryAttentionScorer(), ReceivedAttentionScorer()

    def score(self, ctx: ScoreContext) -> Tensor:
        if isinstance(ctx, EncoderContext) and ctx.num_prefix == 0:
            return self._received.score(ctx)
        # a class token, or no encoder attention at all (after InternVL's projector): the [CLS]
        # scorer, which raises the clear error in the latter case
        return self._cls.score(ctx)

    def __repr__(self) -> str:
        return "ClassOrReceivedAttentionScorer()"


def build(config: VisionZipConfig) -> VisionLanguageStrategy:
    """Projector-side selection: [CLS]-attention dominant tokens + contextual merge."""
    scorer = {"auto": ClassOrReceivedAttentionScorer, "cls": QueryAttentionScorer,
              "received": ReceivedAttentionScorer}[config.scorer]()  # fmt: skip
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
