"""A scheduler for the projector site: one reduction of each image's features, before the LLM."""

from __future__ import annotations

from ..errors import ScheduleError
from ..interfaces import Scheduler

__all__ = ["ProjectorShare"]


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
