"""tokenprune-hiddennorm: drop the visual tokens with the smallest hidden-state norm.

A complete third-party tokenprune plugin in one module (the docs' "Write a plugin" guide).
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor

import tokenprune
from tokenprune import Scorer, ScoreContext, Strategy, StrategyConfig
from tokenprune.components import StageScheduler, TopKDrop


class HiddenNormScorer(Scorer):
    """Score every slot by the L2 norm of its hidden state at the reduction layer."""

    def score(self, ctx: ScoreContext) -> Tensor:
        return ctx.hidden.float().norm(dim=-1)  # (B, n); only candidate (visual) slots are read


class HiddenNormConfig(StrategyConfig):
    """Options of the `hiddennorm` strategy."""

    layer: int = Field(2, ge=1, description="First decoder layer (0-based) that sees fewer tokens.")
    keep: float = Field(0.5, gt=0.0, le=1.0, description="Share of each sample's visual tokens kept.")


def build(config: HiddenNormConfig) -> Strategy:
    """One stage: from `config.layer` on, keep the `keep` share of visual tokens with the largest norm."""
    return Strategy(
        scheduler=StageScheduler([config.layer], [config.keep]),
        scorer=HiddenNormScorer(),
        reducer=TopKDrop(),
        name="hiddennorm",
        config=config,
    )


@tokenprune.hookimpl
def tokenprune_register_strategies(register) -> None:
    register(
        "hiddennorm",
        HiddenNormConfig,
        build,
        aliases=("hnorm",),
        description="Keep the visual tokens with the largest hidden-state norm (one stage).",
    )
