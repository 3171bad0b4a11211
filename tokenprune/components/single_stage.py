"""The one-reduction schedule most in-LLM methods use (FastV, DART, random and uniform baselines)."""

from __future__ import annotations

from pydantic import Field, model_validator

from ..budget import Budget, BudgetError, budget_field, budget_flops_field, reference_field, solve
from ..config import StrategyConfig
from .stage_scheduler import StageScheduler, resolve_boundary

__all__ = ["SingleStageConfig", "solve_keep"]

DEFAULT_KEEP = 0.5


def solve_keep(layer: int | float, budget: Budget) -> float:
    """The share kept from ``layer`` on that meets ``budget`` on the reference model.

    With ``budget`` in tokens this is the literature's "equivalent" count: FastV with K = 2 keeps
    ``(32 * B - 2 * 576) / (30 * 576)`` of 576 tokens for an average of ``B`` per layer.
    """
    boundary = resolve_boundary(layer, budget.dims.num_layers)
    return solve(lambda keep: ([boundary], [keep]), budget, what="keep")


class SingleStageConfig(StrategyConfig):
    """One reduction: from ``layer`` on, each sample keeps ``int(N * keep)`` of its ``N`` visual tokens.

    ``keep`` may instead be solved from a ``budget`` (average visual tokens per layer) or
    ``budget_flops`` (share of dense FLOPs) on the reference model.
    """

    layer: int | float = Field(
        2, description="First decoder layer (0-based) that sees fewer tokens, = the 1-based layer after which "
        "tokens drop; or a fraction of depth in (0, 1).",
    )
    keep: float | None = Field(None, gt=0.0, le=1.0, description="Share of each sample's visual tokens kept; unset means 0.5.")
    budget: float | None = budget_field()
    budget_flops: float | None = budget_flops_field()
    reference: str = reference_field()

    @model_validator(mode="after")
    def _consistent(self) -> SingleStageConfig:
        if isinstance(self.layer, float) and not 0.0 < self.layer < 1.0 and not self.layer.is_integer():
            raise ValueError(f"layer={self.layer}: give a 0-based layer index (>= 1) or a fraction of depth in (0, 1).")
        if not isinstance(self.layer, float) and self.layer < 1:
            raise ValueError(f"layer={self.layer}: layer 0 always sees every token; use layer >= 1.")
        budget = Budget.from_config(self)
        if budget is not None and self.keep is not None:
            raise ValueError("A budget sets `keep` itself: give either budget/budget_flops or keep, not both.")
        self.keep_ratio()  # a budget out of reach fails here, before anything is attached
        return self

    def keep_ratio(self) -> float:
        """``keep``, or the share solved from the budget, or 0.5."""
        budget = Budget.from_config(self)
        if budget is None:
            return self.keep if self.keep is not None else DEFAULT_KEEP
        try:
            return solve_keep(self.layer, budget)
        except BudgetError as exc:
            raise ValueError(str(exc)) from None

    def scheduler(self) -> StageScheduler:
        """The one-stage scheduler these options describe (budget solved if one was given)."""
        return StageScheduler([self.layer], [self.keep_ratio()])
