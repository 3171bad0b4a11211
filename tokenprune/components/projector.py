"""The projector site's scheduler and its options: one reduction of each image's features, before the LLM.

The literature states projector-side budgets as tokens per image on LLaVA-1.5-7B ("192 / 128 /
64 of 576"). `ProjectorBudgetConfig`'s ``budget`` converts such a count into the ``ratio`` of the
patch grid with the reference model's visual tokens per image (`tokenprune.cost.ModelDims.preset`),
so the same share applies to any model the strategy wraps. The projector-side strategies
(VisionZip, DivPrune, pooling) and the ``"projector"`` scheduler component share these options.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from ..config import StrategyConfig
from ..cost import ModelDims
from ..errors import ScheduleError
from ..interfaces import Scheduler

__all__ = ["ProjectorShare", "ProjectorBudgetConfig"]


class ProjectorShare(Scheduler):
    """Keep ``ratio`` of every image's patch tokens where the vision tower hands them to the projector.

    The projector site has no layers: there is one reduction, per image, before the LLM sees any
    visual token. This scheduler lets projector-side scorers and reducers be composed by name like
    the other sites (``wrap(model, scheduler="projector", scorer="attention", reducer="diversity",
    ratio=0.25)``); the composed strategy runs as a `ProjectorSelection`.

    Args:
        ratio: share of the patch tokens of each image that reach the projector, in (0, 1].
    """

    sites = frozenset({"projector"})

    def __init__(self, ratio: float):
        if not 0.0 < ratio <= 1.0:
            raise ScheduleError(f"ratio={ratio} is outside (0, 1].")
        self.ratio = float(ratio)

    def resolve_layers(self, num_layers: int) -> tuple[int, ...]:
        """No layer: the reduction happens before the first block of the LLM."""
        return ()

    def keep_counts(self, num_visual: int, num_layers: int) -> tuple[int, ...]:
        """No per-layer count (the projector keeps ``int(ratio * patches)`` per image)."""
        return ()

    def __repr__(self) -> str:
        return f"ProjectorShare(ratio={self.ratio})"


class ProjectorBudgetConfig(StrategyConfig):
    """``ratio`` (share of the patch tokens kept) or ``budget`` (tokens per image on ``reference``).

    Subclasses set ``ratio``'s default. Giving both ``ratio`` and ``budget`` is refused.
    """

    ratio: float = Field(0.5, gt=0.0, le=1.0, description="Share of the patch tokens that reach the projector.")
    budget: float | None = Field(
        None, gt=0.0, description="Visual tokens kept per image on the reference model (e.g. 192, 128, 64 of 576); sets ratio."
    )
    reference: str = Field("llava-1.5-7b", description="Cost-model preset whose visual tokens per image the budget is stated for.")

    @model_validator(mode="after")
    def _budget_to_ratio(self) -> ProjectorBudgetConfig:
        """Turn ``budget`` into ``ratio`` (refusing both at once, or a budget above the image's tokens)."""
        if self.budget is None:
            return self
        if "ratio" in self.model_fields_set:
            raise ValueError("Give either ratio or budget, not both.")
        try:
            total = ModelDims.preset(self.reference).visual_tokens
        except KeyError as err:
            raise ValueError(str(err).strip("'\"")) from None
        if not total or self.budget > total:
            raise ValueError(f"budget {self.budget} is outside (0, {total}], the visual tokens per image of {self.reference!r}.")
        object.__setattr__(self, "ratio", self.budget / total)
        return self
