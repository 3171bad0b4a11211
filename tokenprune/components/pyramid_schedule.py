"""PyramidDrop's stage schedule: boundaries and cumulative ratios, from the official names, λ and S, or a budget.

Shared by the PyramidDrop strategy (`tokenprune.plugins.pyramiddrop`) and the ``"pyramid"``
scheduler component (`tokenprune.plugins.builtin_components`), so neither plugin imports the other.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from ..budget import Budget, BudgetError, budget_field, budget_flops_field, reference_field, solve
from ..config import StrategyConfig
from .stage_scheduler import StageScheduler, resolve_boundary

__all__ = ["PyramidScheduleConfig", "PyramidSchedulerOptions", "build_scheduler", "DEFAULT_RATIO", "DEFAULT_STAGES"]

DEFAULT_RATIO = 0.5
"""λ when neither ``ratio`` nor ``image_token_ratio_list`` is given (the paper's choice)."""
DEFAULT_STAGES = 4
"""S when no boundaries are given (the paper's choice)."""


class PyramidScheduleConfig(StrategyConfig):
    """The stage schedule of PyramidDrop: the official names, or the short form ``ratio`` (λ) and ``stages`` (S).

    With nothing set: S = 4 equal stages and λ = 0.5, i.e. ``[8, 16, 24]`` and
    ``[0.5, 0.25, 0.125]`` on a 32-layer LLM. Also the ``"pyramid"`` scheduler component.
    """

    layer_list: list[int] | None = Field(
        None, description="1-based layers AFTER which tokens are ranked and dropped, e.g. [8, 16, 24] (official name)."
    )
    image_token_ratio_list: list[float] | None = Field(
        None,
        description="Cumulative share of the ORIGINAL visual tokens kept after each entry of layer_list, "
        "e.g. [0.5, 0.25, 0.125] (official name; without the leading 1.0).",
    )
    layer_fractions: list[float] | None = Field(
        None, description="Stage boundaries as fractions of depth, e.g. [0.25, 0.5, 0.75]: one schedule for any depth."
    )
    ratio: float | None = Field(
        None, gt=0.0, le=1.0, description="λ: share kept at each boundary (short form); unset means 0.5."
    )
    stages: int | None = Field(None, ge=2, description="S: number of equal stages (short form); unset means 4.")

    @model_validator(mode="after")
    def _consistent(self) -> PyramidScheduleConfig:
        # Unset short-form fields stay None (not their defaults), so a config dumped to JSON loads back
        # unchanged and a conflict is always something the user wrote.
        if self.layer_list is not None and self.layer_fractions is not None:
            raise ValueError("Give either layer_list (absolute layers) or layer_fractions (share of depth), not both.")
        if self.stages is not None and (self.layer_list is not None or self.layer_fractions is not None):
            raise ValueError("`stages` sets equal stages; it cannot be combined with layer_list or layer_fractions.")
        if self.ratio is not None and self.image_token_ratio_list is not None:
            raise ValueError("Give either ratio (λ per stage) or image_token_ratio_list (cumulative), not both.")
        budget = Budget.from_config(self)
        if budget is not None and (self.ratio is not None or self.image_token_ratio_list is not None):
            raise ValueError(
                "A budget sets λ itself: give either budget/budget_flops or ratio/image_token_ratio_list, not both."
            )
        if self.image_token_ratio_list is None and min(self.ratios()) <= 0.0:
            raise ValueError(
                f"ratio={self.ratio} is too small: λ^{len(self.boundaries())} underflows to 0 (nothing would be kept). "
                "Use a larger ratio, or give image_token_ratio_list explicitly."
            )
        if self.layer_list is not None:
            if any(layer < 1 for layer in self.layer_list):
                raise ValueError(
                    f"layer_list={self.layer_list}: entries are 1-based layers after which tokens drop; "
                    "a drop at layer 0 (before the first layer) is not allowed."
                )
            if any(b <= a for a, b in zip(self.layer_list, self.layer_list[1:])):
                raise ValueError(f"layer_list={self.layer_list} must be strictly increasing.")
        if self.layer_fractions is not None:
            if any(not 0.0 < f < 1.0 for f in self.layer_fractions):
                raise ValueError(f"layer_fractions={self.layer_fractions}: every entry must be in (0, 1).")
            if any(b <= a for a, b in zip(self.layer_fractions, self.layer_fractions[1:])):
                raise ValueError(f"layer_fractions={self.layer_fractions} must be strictly increasing.")
        if self.image_token_ratio_list is not None:
            ratios = self.image_token_ratio_list
            if any(not 0.0 < r <= 1.0 for r in ratios):
                raise ValueError(f"image_token_ratio_list={ratios}: every ratio must be in (0, 1].")
            if any(b > a for a, b in zip(ratios, ratios[1:])):
                raise ValueError(
                    f"image_token_ratio_list={ratios} must not increase: ratios are cumulative w.r.t. the original count."
                )
            if len(ratios) != len(self.boundaries()):
                raise ValueError(
                    f"image_token_ratio_list has {len(ratios)} entries for {len(self.boundaries())} stage boundaries; "
                    "give one cumulative ratio per boundary (without the leading 1.0 of the reference code)."
                )
        return self

    def boundaries(self) -> list[int | float]:
        """Stage boundaries: absolute layers, or fractions of depth resolved when the model is known."""
        if self.layer_list is not None:
            return list(self.layer_list)
        if self.layer_fractions is not None:
            return list(self.layer_fractions)
        stages = self.stages if self.stages is not None else DEFAULT_STAGES
        return [s / stages for s in range(1, stages)]

    def ratios(self) -> list[float]:
        """Cumulative retention after each boundary."""
        if self.image_token_ratio_list is not None:
            return list(self.image_token_ratio_list)
        ratio = self.lam()
        return [ratio**s for s in range(1, len(self.boundaries()) + 1)]

    def lam(self) -> float:
        """λ: the given ``ratio``, the one solved from ``budget`` / ``budget_flops``, or 0.5."""
        budget = Budget.from_config(self)
        if budget is None:
            return self.ratio if self.ratio is not None else DEFAULT_RATIO
        depth = budget.dims.num_layers
        layers = [resolve_boundary(b, depth) for b in self.boundaries()]
        stages = len(layers)
        try:
            return solve(lambda lam: (layers, [lam**s for s in range(1, stages + 1)]), budget, what="λ")
        except BudgetError as exc:
            raise ValueError(str(exc)) from None


class PyramidSchedulerOptions(PyramidScheduleConfig):
    """Options of the ``"pyramid"`` scheduler component: the PyramidDrop schedule, with a budget."""

    budget: float | None = budget_field()
    budget_flops: float | None = budget_flops_field()
    reference: str = reference_field()


def build_scheduler(config: PyramidScheduleConfig) -> StageScheduler:
    """The stage scheduler a PyramidDrop schedule config describes."""
    return StageScheduler(config.boundaries(), config.ratios())
