"""Random baseline: keep a seeded random subset of each sample's visual tokens, once, after a layer.

A strong baseline in the literature (FastV's K = 0 "random" rows; LLMC ``RandomPrune``; Wen et al.
arXiv:2502.11501; "When Token Pruning is Worse than Random"). The ranking is reproducible and
batch-invariant: it depends only on ``seed``, the layer and the sample's visual-token count (see
`tokenprune.components.RandomScorer`), never on the other samples of the batch.
"""

from __future__ import annotations

from pydantic import Field

from ..components import RandomScorer, TopKDrop
from ..components.single_stage import SingleStageConfig
from ..hookspecs import RegisterStrategy, hookimpl
from ..interfaces import Strategy

__all__ = ["RandomConfig", "build"]


class RandomConfig(SingleStageConfig):
    """One reduction after ``layer`` keeping a random ``keep`` share (or a budget); ``seed`` picks the draw."""

    seed: int = Field(0, ge=0, description="Seed of the random ranking (same seed, same selection).")


def build(config: RandomConfig) -> Strategy:
    """One reduction keeping a seeded random share (a baseline)."""
    return Strategy(config.scheduler(), RandomScorer(config.seed), TopKDrop(), name="random", config=config)


@hookimpl
def tokenprune_register_strategies(register: RegisterStrategy) -> None:
    register(
        "random",
        RandomConfig,
        build,
        description="Baseline: keep a seeded random share of the visual tokens, once, after a layer.",
    )
