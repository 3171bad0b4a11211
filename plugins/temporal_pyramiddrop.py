"""A temporal stage before the LLM, then PyramidDrop inside it, as one strategy.

Video prompts carry temporal redundancy (static patches, repeated frames), which a cheap
comparison of neighbouring frames removes before the LLM, and query-irrelevant tokens, which only
the LLM's own attention can rank. ``temporal_pyramiddrop`` runs both: EVS, DyCoke's temporal stage or
VidCom2 on every video at the projector (``temporal``, ``temporal_ratio``), then PyramidDrop's
stages on what is left (every PyramidDrop option applies; its ratios are shares of the tokens the
LLM receives). Still images skip the temporal stage and meet PyramidDrop only. Kept tokens keep
their original positions through both stages. Runs on Qwen2-VL / Qwen2.5-VL and LLaVA-OneVision.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..components.frame_uniqueness import FrameUniquenessDrop
from ..components.null import NullScorer
from ..components.static_patches import StaticPatchDrop
from ..components.temporal import TemporalReducer, TemporalSelection
from ..components.window_redundancy import WindowRedundancyDrop
from ..vision_language import VisionLanguageStrategy
from ..hookspecs import RegisterStrategy, hookimpl
from .pyramiddrop import PyramidDropConfig
from .pyramiddrop import build as build_pyramiddrop

__all__ = ["TemporalPyramidDropConfig", "build", "TEMPORAL_REDUCERS"]

TEMPORAL_REDUCERS: dict[str, type[TemporalReducer]] = {
    "evs": StaticPatchDrop,
    "dycoke": WindowRedundancyDrop,
    "vidcom2": FrameUniquenessDrop,
}
"""The temporal stages by name."""


class TemporalPyramidDropConfig(PyramidDropConfig):
    """PyramidDrop options plus the temporal stage before the LLM."""

    temporal: Literal["evs", "dycoke", "vidcom2"] = Field("evs", description="The temporal stage at the projector.")
    temporal_ratio: float = Field(0.5, gt=0.0, le=1.0, description="Kept share of the temporal stage (its own 'ratio').")


def build(config: TemporalPyramidDropConfig) -> VisionLanguageStrategy:
    """Temporal selection at the projector + PyramidDrop in the LLM."""
    llm = build_pyramiddrop(config)
    temporal = TemporalSelection(config.temporal_ratio, NullScorer(), TEMPORAL_REDUCERS[config.temporal]())
    return VisionLanguageStrategy(llm=llm, projector=temporal, name="temporal_pyramiddrop")


@hookimpl
def tokenprune_register_strategies(register: RegisterStrategy) -> None:
    register(
        "temporal_pyramiddrop",
        TemporalPyramidDropConfig,
        build,
        description="A temporal stage (EVS, DyCoke, VidCom2) on every video before the LLM, then PyramidDrop inside it.",
    )
