"""A per-block rate scheduler: remove ``r`` tokens before every block (ToMe's constant schedule)."""

from __future__ import annotations

import math

from ..errors import ScheduleError
from ..interfaces import Scheduler

__all__ = ["ConstantRateScheduler"]


class ConstantRateScheduler(Scheduler):
    """Remove ``r`` tokens before every block from ``start`` on, never more than half of what is left.

    ToMe merges ``r`` tokens in every block, capped at 50% per block (bipartite matching cannot
    remove more). Reductions happen between blocks here, so block ``start`` (default 1) is the
    first to see fewer tokens and ``r * (L - start)`` tokens leave at most.

    Give ``ratio`` instead of ``r`` to state a budget: the share of the patch tokens left after the
    last block. ``r`` is then solved per plan, from the number of scheduled blocks and the tokens
    of the input, as the smallest constant rate that reaches the budget (the last reduction removes
    only what is left to remove; the 50% cap may leave more than the budget on shallow encoders).

    Args:
        r: tokens removed before each block.
        start: first block that sees fewer tokens (>= 1).
        ratio: share of the patch tokens kept after the last block, in (0, 1] (instead of ``r``).
    """

    sites = frozenset({"encoder"})

    def __init__(self, r: int | None = None, start: int = 1, ratio: float | None = None):
        if (r is None) == (ratio is None):
            raise ScheduleError("Give exactly one of r (tokens removed per block) or ratio (share of tokens kept).")
        if r is not None and r < 0:
            raise ScheduleError(f"r={r}: the number of tokens removed per block must be >= 0.")
        if ratio is not None and not 0.0 < ratio <= 1.0:
            raise ScheduleError(f"ratio={ratio} is outside (0, 1].")
        if start < 1:
            raise ScheduleError(f"start={start}: block 0 always sees every token; use start >= 1.")
        self.r = None if r is None else int(r)
        self.ratio = ratio
        self.start = int(start)

    def resolve_layers(self, num_layers: int) -> tuple[int, ...]:
        if self.start >= num_layers:
            raise ScheduleError(f"start={self.start} is out of range for {num_layers} blocks (use 1..{num_layers - 1}).")
        return tuple(range(self.start, num_layers))

    def keep_counts(self, num_visual: int, num_layers: int) -> tuple[int, ...]:
        blocks = len(self.resolve_layers(num_layers))
        floor = 0
        r = self.r
        if r is None:
            floor = max(1, round(self.ratio * num_visual))
            r = math.ceil((num_visual - floor) / blocks) if blocks else 0
        counts, current = [], num_visual
        for _ in range(blocks):
            current -= max(0, min(r, current // 2, current - floor))
            counts.append(current)
        return tuple(counts)

    def __repr__(self) -> str:
        rate = f"r={self.r}" if self.r is not None else f"ratio={self.ratio}"
        return f"ConstantRateScheduler({rate}, start={self.start})"
