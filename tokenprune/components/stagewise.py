"""Different reducers for different reductions of one strategy."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ..interfaces import Reducer, Reduction, ScoreContext, check_sites

__all__ = ["PerStageReducer"]


class PerStageReducer(Reducer):
    """Use ``reducers[s]`` at reduction ``s`` (the last one for every later reduction).

    E.g. VideoChat-Flash's "uniform first stage, attention after":
    ``PerStageReducer([StrideDrop(), TopKDrop()])``.
    """

    def __init__(self, reducers: Sequence[Reducer]):
        if not reducers:
            raise ValueError("PerStageReducer needs at least one reducer.")
        self.reducers = tuple(reducers)
        self.sites = check_sites(*self.reducers)  # type: ignore[misc]  # where all of them can act
        self.exact_count = all(r.exact_count for r in self.reducers)  # type: ignore[misc]

    def reduce(self, ctx: ScoreContext, scores: Tensor, candidates: Tensor, n_keep: Tensor) -> Reduction:
        return self.reducers[min(ctx.stage, len(self.reducers) - 1)].reduce(ctx, scores, candidates, n_keep)

    def __repr__(self) -> str:
        return f"PerStageReducer({list(self.reducers)!r})"
