"""Spatial baselines on the patch grid: average pooling and regular downsampling.

Both need the grid's shape: a row's candidates are read as a square ``side x side`` raster
(CLIP and SigLIP towers), and the kept count as a square ``k x k`` grid. The grid is split into
``k x k`` cells (cell ``i`` spans rows ``floor(i*side/k)`` to ``floor((i+1)*side/k)``, the
partition of adaptive average pooling); each cell is represented by its top-left slot, so kept
tokens stay in raster order.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import ScheduleError
from ..interfaces import Reducer, Reduction, ScoreContext

__all__ = ["GridDownsample", "GridPool", "grid_cells"]


def _side(count: int, what: str) -> int:
    side = math.isqrt(count)
    if side * side != count:
        raise ScheduleError(
            f"Spatial pooling/downsampling needs a square grid, but {what} is {count} tokens (not a square number). "
            "Use a square patch grid (CLIP/SigLIP towers) and a ratio whose kept count is a square "
            "(e.g. 0.25 for 2x2 cells), or a strategy that does not need the grid."
        )
    return side


def grid_cells(side: int, k: int) -> Tensor:
    """``(side*side,)`` cell index (row-major over the ``k x k`` cells) of every raster position."""
    starts = torch.tensor([i * side // k for i in range(k)])
    row_cell = torch.searchsorted(starts, torch.arange(side), right=True) - 1
    return (row_cell[:, None] * k + row_cell[None, :]).reshape(-1)


def _layout(candidates: Tensor, n_keep: Tensor, b: int) -> tuple[Tensor, Tensor, Tensor]:
    slots = torch.nonzero(candidates[b], as_tuple=False)[:, 0]
    side = _side(slots.numel(), "the patch grid")
    k = _side(int(n_keep[b]), f"the kept count {int(n_keep[b])} of a {side}x{side} grid")
    cells = grid_cells(side, k).to(slots.device)
    first = torch.full((k * k,), slots.numel(), dtype=torch.long, device=slots.device)
    first = first.scatter_reduce(0, cells, torch.arange(slots.numel(), device=slots.device), reduce="amin")
    return slots, cells, slots[first]


class GridDownsample(Reducer):
    """Keep the top-left patch of every cell of a regular ``k x k`` grid; drop the rest (scores ignored)."""

    sites = frozenset({"projector"})

    def reduce(self, ctx: ScoreContext, scores: Tensor, candidates: Tensor, n_keep: Tensor) -> Reduction:
        keep = torch.zeros_like(candidates)
        for b in range(candidates.shape[0]):
            _, _, kept = _layout(candidates, n_keep, b)
            keep[b, kept] = True
        return Reduction(keep=keep)

    def __repr__(self) -> str:
        return "GridDownsample()"


class GridPool(Reducer):
    """Average every cell of a ``k x k`` grid into one token (2x2 pooling keeps 1/4; scores ignored)."""

    sites = frozenset({"projector"})

    def reduce(self, ctx: ScoreContext, scores: Tensor, candidates: Tensor, n_keep: Tensor) -> Reduction:
        keep = torch.zeros_like(candidates)
        hidden = ctx.hidden.clone()
        for b in range(candidates.shape[0]):
            slots, cells, kept = _layout(candidates, n_keep, b)
            h = ctx.hidden[b, slots.to(hidden.device)]
            cells = cells.to(hidden.device)
            sums = torch.zeros(kept.numel(), h.shape[-1], dtype=h.dtype, device=h.device).index_add_(0, cells, h)
            counts = torch.bincount(cells, minlength=kept.numel()).to(h.dtype)
            hidden[b, kept.to(hidden.device)] = sums / counts.unsqueeze(-1)
            keep[b, kept] = True
        return Reduction(keep=keep, hidden=hidden)

    def __repr__(self) -> str:
        return "GridPool()"
