"""FastV: drop the visual tokens that receive the least attention, once, after layer K.

Chen et al., "An Image is Worth 1/2 Tokens After Layer 2: Plug-and-Play Inference Acceleration for
Large Vision-Language Models", arXiv:2403.06764 (ECCV 2024). Reference code:
github.com/pkunlp-icler/FastV.

FastV's convention: ``k`` = K, the 1-based layer after which tokens are re-ranked (layers 1..K run on
every token; K = 2 by default), and ``r`` = R, the share of visual tokens *dropped* (0.5 by default;
``int(N * (1 - R))`` stay). The ranking is the attention of layer K (1-based), i.e. of the layer just
below the first shrunk one.

Differences from the reference code (see docs/strategies/fastv.md):

* Score: by default the paper's "average attention one token receives from all other tokens"
  (``query="all"``); the reference code uses only the last prompt token's row (``query="last"``).
* Attention rows are recomputed from the layer's own norm, q/k projections and RoPE, so SDPA and
  FlashAttention work (the reference needs eager attention for layer K).
* Per-sample ranking in batches of any padding; the reference applies sample 0's ranking to the batch.
* Kept count ``int(N * (1 - R))`` (the HF fork rounds).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..budget import Budget, BudgetError, budget_field, budget_flops_field, reference_field
from ..components import QueryAttentionScorer, ReceivedAttentionScorer, StageScheduler, TopKDrop
from ..components.single_stage import solve_keep
from ..config import StrategyConfig
from ..hookspecs import RegisterStrategy, hookimpl
from ..interfaces import Strategy

__all__ = ["FastVConfig", "build"]


class FastVConfig(StrategyConfig):
    """FastV options in the paper's K / R convention, or a budget."""

    k: int = Field(2, ge=1, description="K: 1-based layer after which visual tokens are re-ranked and dropped (= the first 0-based layer that sees fewer).")
    r: float | None = Field(None, ge=0.0, lt=1.0, description="R: share of visual tokens DROPPED after layer K; unset means 0.5.")
    query: Literal["all", "last"] = Field(
        "all", description="'all': attention received from every token (the paper); 'last': the last prompt token's row (the reference code)."
    )
    budget: float | None = budget_field()
    budget_flops: float | None = budget_flops_field()
    reference: str = reference_field()

    @model_validator(mode="after")
    def _consistent(self) -> FastVConfig:
        if Budget.from_config(self) is not None and self.r is not None:
            raise ValueError("A budget sets R itself: give either budget/budget_flops or r, not both.")
        self.keep_ratio()
        return self

    def keep_ratio(self) -> float:
        """``1 - R``: the share of visual tokens kept from layer K on."""
        budget = Budget.from_config(self)
        if budget is None:
            return 1.0 - (self.r if self.r is not None else 0.5)
        try:
            return solve_keep(self.k, budget)
        except BudgetError as exc:
            raise ValueError(str(exc)) from None


def build(config: FastVConfig) -> Strategy:
    """One stage at K + attention of layer K (1-based) + top-k drop."""
    scorer = ReceivedAttentionScorer(layer="previous") if config.query == "all" else QueryAttentionScorer(layer="previous")
    keep = config.keep_ratio()
    return Strategy(
        scheduler=StageScheduler([config.k], [keep]),
        scorer=scorer,
        reducer=TopKDrop(),
        name="fastv",
        config=config,
    )


@hookimpl
def tokenprune_register_strategies(register: RegisterStrategy) -> None:
    register(
        "fastv",
        FastVConfig,
        build,
        description="Drop the visual tokens receiving the least attention, once, after layer K (arXiv:2403.06764).",
    )
