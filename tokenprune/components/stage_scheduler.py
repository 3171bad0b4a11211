"""Stage schedulers: token counts that shrink at a few layer boundaries."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import ScheduleError
from ..interfaces import Scheduler
from ..schedule import validate_layers

__all__ = ["StageScheduler", "resolve_boundary"]


def resolve_boundary(boundary: int | float, num_layers: int) -> int:
    """An absolute layer index stays as it is; a fraction in (0, 1) is a share of the depth.

    Fractions floor, so ``0.25`` is layer 8 of 32, 7 of 28 and 6 of 24: one schedule object
    resolves on every architecture.
    """
    if isinstance(boundary, float) and 0.0 < boundary < 1.0:
        return math.floor(boundary * num_layers + 1e-9)
    if isinstance(boundary, float) and not boundary.is_integer():
        raise ScheduleError(f"Layer boundary {boundary} must be an integer layer or a fraction of depth in (0, 1).")
    return int(boundary)


class StageScheduler(Scheduler):
    """Keep ``int(N * ratios[s])`` of a sample's ``N`` visual tokens from ``boundaries[s]`` on.

    Args:
        boundaries: per stage, the first layer that sees fewer tokens: an integer layer index
            (0-based, equal to the 1-based "drop after layer" number) or a fraction of depth.
        ratios: cumulative retention relative to the ORIGINAL count ``N`` (PyramidDrop's
            ``image_token_ratio_list``), in (0, 1] and non-increasing.
    """

    sites = frozenset({"llm", "encoder"})

    def __init__(self, boundaries: Sequence[int | float], ratios: Sequence[float]):
        if len(boundaries) != len(ratios):
            raise ScheduleError(
                f"{len(boundaries)} layer boundaries but {len(ratios)} ratios: give one retention ratio per boundary."
            )
        for r in ratios:
            if not 0.0 < r <= 1.0:
                raise ScheduleError(f"Retention ratio {r} is outside (0, 1].")
        if any(b > a for a, b in zip(ratios, ratios[1:])):
            raise ScheduleError(
                f"Retention ratios must not increase (they are cumulative w.r.t. the original count), got {list(ratios)}."
            )
        self.boundaries = tuple(boundaries)
        self.ratios = tuple(float(r) for r in ratios)

    def resolve_layers(self, num_layers: int) -> tuple[int, ...]:
        layers = [resolve_boundary(b, num_layers) for b in self.boundaries]
        fractions = any(isinstance(b, float) for b in self.boundaries)
        if fractions and min(layers, default=1) >= 1 and any(b <= a for a, b in zip(layers, layers[1:])):
            raise ScheduleError(
                f"Boundaries {list(self.boundaries)} resolve to layers {layers} on a {num_layers}-layer model: "
                "two boundaries fall on the same layer. Use fewer or wider-spaced fractions for this depth, "
                "or absolute layers (layer_list)."
            )
        return validate_layers(layers, num_layers)

    def keep_counts(self, num_visual: int, num_layers: int) -> tuple[int, ...]:
        # int() truncation from the original count at every stage, as the official PyramidDrop code.
        return tuple(int(num_visual * r) for r in self.ratios)

    def __repr__(self) -> str:
        return f"StageScheduler(boundaries={list(self.boundaries)}, ratios={list(self.ratios)})"
