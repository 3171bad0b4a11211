"""Spatial baselines at the projector: average pooling and regular downsampling of the patch grid.

``pooling`` averages every cell of a ``k x k`` grid of cells into one token (``ratio=0.25`` is 2x2
average pooling); ``downsample`` keeps the top-left patch of every cell. Both read the tower's
patch grid as square (``side = sqrt(tokens)``, CLIP and SigLIP) and refuse, with a clear error, a
grid or a kept count that is not a square. On Qwen2-VL / Qwen2.5-VL they get each image's real
merged grid (which need not be square) and keep a grid of cells with its aspect (``ratio=0.25`` of
4 x 6 keeps 2 x 3).
"""

from __future__ import annotations

from pydantic import Field

from ..components import GridDownsample, GridPool, NullScorer
from ..vision_language import ProjectorSelection, VisionLanguageStrategy
from ..hookspecs import RegisterStrategy, hookimpl
from ..components.projector import ProjectorBudgetConfig

__all__ = ["GridConfig", "build_downsample", "build_pooling"]


class GridConfig(ProjectorBudgetConfig):
    """Options of ``pooling`` and ``downsample``."""

    ratio: float = Field(0.25, gt=0.0, le=1.0, description="Share of the patch tokens kept; the kept count must be a square (0.25: 2x2 cells).")


def build_pooling(config: GridConfig) -> VisionLanguageStrategy:
    """Average pooling of the patch grid before the projector."""
    return VisionLanguageStrategy(projector=ProjectorSelection(config.ratio, NullScorer(), GridPool()), name="pooling")


def build_downsample(config: GridConfig) -> VisionLanguageStrategy:
    """A regular grid of patches before the projector."""
    return VisionLanguageStrategy(
        projector=ProjectorSelection(config.ratio, NullScorer(), GridDownsample()), name="downsample"
    )


@hookimpl
def tokenprune_register_strategies(register: RegisterStrategy) -> None:
    register(
        "pooling",
        GridConfig,
        build_pooling,
        description="Average-pool the patch grid before the projector (ratio 0.25 = 2x2 pooling).",
    )
    register(
        "downsample",
        GridConfig,
        build_downsample,
        description="Keep a regular spatial grid of patches before the projector.",
    )
