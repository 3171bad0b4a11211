"""The built-in schedulers, scorers and reducers, registered by name for mix-and-match strategies.

``tokenprune.wrap(model, scheduler="pyramid", scorer="l2norm", reducer="topk", ratio=0.5)``
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..components import (
    BipartiteMerge,
    ConstantRateScheduler,
    ConstantScorer,
    ContextualMerge,
    GridDownsample,
    GridPool,
    KeyNormScorer,
    L2NormScorer,
    MaxMinDiversityDrop,
    NullScorer,
    PivotDedupDrop,
    ProjectorShare,
    QueryAttentionScorer,
    RandomScorer,
    ReceivedAttentionScorer,
    SimilarityMerge,
    StrideDrop,
    TextAttentionScorer,
    TextRaterScorer,
    TopKDrop,
)
from ..components.single_stage import SingleStageConfig
from ..config import StrategyConfig
from ..hookspecs import RegisterComponent, hookimpl
from ..components.projector import ProjectorBudgetConfig
from ..components.pyramid_schedule import PyramidSchedulerOptions, build_scheduler

__all__ = [
    "NoOptions", "LayerOption", "SeedOption", "PivotOptions", "RateOptions", "MergeOptions", "BipartiteOptions",
    "ContextualOptions",
]  # fmt: skip


class NoOptions(StrategyConfig):
    """A component without options."""


class LayerOption(StrategyConfig):
    """Which layer an attention or key scorer computes with."""

    score_layer: Literal["current", "previous"] = Field(
        "current", description="'current': the reduction layer; 'previous': the layer just below it."
    )


class PreviousLayerOption(LayerOption):
    """`LayerOption` defaulting to the layer below the reduction layer (FastV's convention)."""

    score_layer: Literal["current", "previous"] = Field(
        "previous", description="'previous' (default): the layer just below the reduction layer; 'current': the reduction layer."
    )


class SeedOption(StrategyConfig):
    """The seed of a random ranking."""

    seed: int = Field(0, ge=0, description="Seed of the random ranking.")


class PivotOptions(StrategyConfig):
    """How many pivot tokens a duplication-aware reducer keeps (DART)."""

    image_pivots: int = Field(4, ge=1, description="Visual pivot tokens per sample (kept).")
    text_pivots: int = Field(4, ge=0, description="Text pivot tokens per sample.")


class RateOptions(StrategyConfig):
    """ToMe's constant rate: ``r`` tokens leave before every vision-encoder block from ``start`` on."""

    r: int | None = Field(8, ge=0, description="Tokens removed before every block (at most half of what is left).")
    start: int = Field(1, ge=1, description="First block that sees fewer tokens.")
    ratio: float | None = Field(None, gt=0.0, le=1.0, description="Instead of r: share of the patch tokens left (set r=None).")


class MergeOptions(StrategyConfig):
    """Whether a merging reducer asks for ToMe's proportional attention (vision encoders only)."""

    proportional_attention: bool = Field(
        False, description="Add log(size) to later blocks' attention logits (vision-encoder blocks only)."
    )


class BipartiteOptions(StrategyConfig):
    """`MergeOptions` with ToMe's default: proportional attention on."""

    proportional_attention: bool = Field(True, description="Add log(size) to later blocks' attention logits (ToMe).")


class ContextualOptions(StrategyConfig):
    """VisionZip's split of the kept tokens into dominant and contextual ones."""

    contextual: float = Field(0.16, ge=0.0, lt=1.0, description="Share of the kept tokens that are contextual merges.")


@hookimpl
def tokenprune_register_components(register: RegisterComponent) -> None:
    register("scheduler", "pyramid", PyramidSchedulerOptions, build_scheduler,
             description="PyramidDrop stages: layer_list/ratio/stages/layer_fractions or a budget.")
    register("scheduler", "once", SingleStageConfig, lambda c: c.scheduler(),
             description="One reduction after `layer`, keeping `keep` (or a budget).")
    register("scorer", "attention", LayerOption, lambda c: QueryAttentionScorer(layer=c.score_layer),
             description="Attention of the last instruction token (PyramidDrop; FastV's code).")
    register("scorer", "received", PreviousLayerOption, lambda c: ReceivedAttentionScorer(layer=c.score_layer),
             description="Average attention received from all tokens (FastV's paper).")
    register("scorer", "text_raters", PreviousLayerOption, lambda c: TextRaterScorer(layer=c.score_layer),
             description="Mean attention of the relevant text tokens (SparseVLM-style).")
    register("scorer", "text_attention", LayerOption, lambda c: TextAttentionScorer(layer=c.score_layer),
             description="Mean attention of the whole instruction after the image (multi-query).")
    register("scorer", "l2norm", NoOptions, lambda c: L2NormScorer(),
             description="L2 norm of the hidden state (cheap, no attention).")
    register("scorer", "keynorm", PreviousLayerOption, lambda c: KeyNormScorer(layer=c.score_layer),
             description="L1 norm of the post-rotary keys (DART's pivots).")
    register("scorer", "random", SeedOption, lambda c: RandomScorer(c.seed),
             description="Seeded random ranking, batch-invariant.")
    register("scorer", "constant", NoOptions, lambda c: ConstantScorer(),
             description="Every token scores 0 (for position-only reducers).")
    register("reducer", "topk", NoOptions, lambda c: TopKDrop(),
             description="Keep the top-k by score, drop the rest, original order.")
    register("reducer", "stride", NoOptions, lambda c: StrideDrop(),
             description="Keep an even stride of the candidates; ignores scores.")
    register("reducer", "dedup", PivotOptions, lambda c: PivotDedupDrop(c.image_pivots, c.text_pivots),
             description="Pivots by score, then the least-similar tokens per pivot (DART).")
    register("scheduler", "constant_rate", RateOptions, lambda c: ConstantRateScheduler(None if c.ratio is not None else c.r, c.start, ratio=c.ratio),
             description="ToMe: r tokens leave before every vision-encoder block from `start` on.")
    register("scheduler", "projector", ProjectorBudgetConfig, lambda c: ProjectorShare(c.ratio),
             description="One reduction of each image's features before the projector: `ratio` or `budget`.")
    register("scorer", "null", NoOptions, lambda c: NullScorer(),
             description="No scores (for reducers that decide by similarity or position).")
    register("reducer", "merge", MergeOptions, lambda c: SimilarityMerge(c.proportional_attention),
             description="Keep the top-k; merge every other token into its most similar kept one.")
    register("reducer", "bipartite", BipartiteOptions, lambda c: BipartiteMerge(c.proportional_attention),
             description="ToMe's bipartite soft matching: merge the r most redundant tokens.")
    register("reducer", "contextual", ContextualOptions, lambda c: ContextualMerge(c.contextual),
             description="VisionZip: top-k dominant tokens plus contextual merges of the rest.")
    register("reducer", "diversity", NoOptions, lambda c: MaxMinDiversityDrop(),
             description="DivPrune: greedy max-min cosine diversity; ignores scores.")
    register("reducer", "grid_pool", NoOptions, lambda c: GridPool(),
             description="Average-pool the patch grid into a k x k grid; ignores scores.")
    register("reducer", "grid_downsample", NoOptions, lambda c: GridDownsample(),
             description="Keep one patch per cell of a k x k grid; ignores scores.")
