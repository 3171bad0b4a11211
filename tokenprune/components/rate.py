"""A per-block rate scheduler: remove ``r`` tokens before every block (ToMe's constant schedule)."""

from __future__ import annotations

from ..errors import ScheduleError
from ..interfaces import Scheduler

__all__ = ["ConstantRateScheduler"]


class ConstantRateScheduler(Scheduler):
    """Remove ``r`` tokens before every block from ``start`` on, never more than half of what is left.

    ToMe merges ``r`` tokens in every block, capped at 50% per block (bipartite matching cannot
    remove more). Reductions happen between blocks here, so block ``start`` (default 1) is the
    first to see fewer tokens and ``r * (L - start)`` tokens leave at most.

    Args:
        r: tokens removed before each block.
        start: first block that sees fewer tokens (>= 1).
    """

    sites = frozenset({"encoder"})

    def __init__(self, r: int, start: int = 1):
        if r < 0:
            raise ScheduleError(f"r={r}: the number of tokens removed per block must be >= 0.")
        if start < 1:
            raise ScheduleError(f"start={start}: block 0 always sees every token; use start >= 1.")
        self.r = int(r)
        self.start = int(start)

    def resolve_layers(self, num_layers: int) -> tuple[int, ...]:
        if self.start >= num_layers:
            raise ScheduleError(f"start={self.start} is out of range for {num_layers} blocks (use 1..{num_layers - 1}).")
        return tuple(range(self.start, num_layers))

    def keep_counts(self, num_visual: int, num_layers: int) -> tuple[int, ...]:
        counts, current = [], num_visual
        for _ in self.resolve_layers(num_layers):
            current -= min(self.r, current // 2)
            counts.append(current)
        return tuple(counts)

    def __repr__(self) -> str:
        return f"ConstantRateScheduler(r={self.r}, start={self.start})"
