"""Spatial baselines on the patch grid: average pooling and regular downsampling.

Both need the grid's shape. When the context knows it (``ctx.grid = (frames, rows, cols)``, e.g.
Qwen-VL's merged token grid of each image, which need not be square), a row's candidates are read
as ``frames`` rasters of ``rows x cols``; otherwise as one square ``side x side`` raster (CLIP and
SigLIP towers). The kept count is split evenly over the frames, and each frame keeps a
``kr x kc`` grid of cells with the grid's aspect (``kr = round(rows * s)``, ``kc = round(cols * s)``,
``s = sqrt(kept per frame / (rows * cols))``; a square grid and a square kept count give
``k x k``). Cell ``i`` of a dimension spans ``floor(i*n/k)`` to ``floor((i+1)*n/k)`` (the partition
of adaptive average pooling); each cell is represented by its top-left slot, so kept tokens stay in
raster order.
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


def _starts(n: int, k: int) -> Tensor:
    return torch.tensor([i * n // k for i in range(k)])


def grid_cells(side: int, k: int, cols: int | None = None, k_cols: int | None = None) -> Tensor:
    """``(side*cols,)`` cell index (row-major over the ``k x k_cols`` cells) of every raster position.

    ``cols`` / ``k_cols`` default to ``side`` / ``k`` (a square grid of square cells).
    """
    cols = side if cols is None else cols
    k_cols = k if k_cols is None else k_cols
    row_cell = torch.searchsorted(_starts(side, k), torch.arange(side), right=True) - 1
    col_cell = torch.searchsorted(_starts(cols, k_cols), torch.arange(cols), right=True) - 1
    return (row_cell[:, None] * k_cols + col_cell[None, :]).reshape(-1)


def _cells_of_grid(count: int, kept: int, grid: tuple[int, int, int]) -> tuple[Tensor, int]:
    """Cell index of every candidate of a ``(frames, rows, cols)`` grid, and the number of cells."""
    frames, rows, cols = (int(x) for x in grid)
    if frames * rows * cols != count:
        raise ScheduleError(f"The context's grid {tuple(grid)} holds {frames * rows * cols} tokens, not the {count} candidates.")
    per_frame = kept // frames
    scale = math.sqrt(per_frame / (rows * cols)) if per_frame else 0.0
    k_rows, k_cols = max(1, round(rows * scale)), max(1, round(cols * scale))
    if kept % frames or k_rows * k_cols != per_frame or k_rows > rows or k_cols > cols:
        raise ScheduleError(
            f"Spatial pooling/downsampling cannot keep {kept} tokens of a {rows}x{cols} token grid"
            f"{f' x {frames} frames' if frames > 1 else ''}: it keeps a regular grid of cells with the grid's aspect. "
            f"Use a ratio whose kept count is such a grid (0.25: 2x2 cells), or a strategy that does not need the grid."
        )
    cells = grid_cells(rows, k_rows, cols, k_cols)
    offsets = torch.arange(frames).repeat_interleave(rows * cols) * (k_rows * k_cols)
    return cells.repeat(frames) + offsets, frames * k_rows * k_cols


def _layout(ctx: ScoreContext, candidates: Tensor, n_keep: Tensor, b: int) -> tuple[Tensor, Tensor, Tensor]:
    slots = torch.nonzero(candidates[b], as_tuple=False)[:, 0]
    grid = getattr(ctx, "grid", None)
    if grid is not None:
        cells, count = _cells_of_grid(slots.numel(), int(n_keep[b]), grid)
    else:
        side = _side(slots.numel(), "the patch grid")
        k = _side(int(n_keep[b]), f"the kept count {int(n_keep[b])} of a {side}x{side} grid")
        cells, count = grid_cells(side, k), k * k
    cells = cells.to(slots.device)
    first = torch.full((count,), slots.numel(), dtype=torch.long, device=slots.device)
    first = first.scatter_reduce(0, cells, torch.arange(slots.numel(), device=slots.device), reduce="amin")
    return slots, cells, slots[first]


class GridDownsample(Reducer):
    """Keep the top-left patch of every cell of a regular grid of cells; drop the rest (scores ignored)."""

    sites = frozenset({"projector"})

    def reduce(self, ctx: ScoreContext, scores: Tensor, candidates: Tensor, n_keep: Tensor) -> Reduction:
        keep = torch.zeros_like(candidates)
        for b in range(candidates.shape[0]):
            _, _, kept = _layout(ctx, candidates, n_keep, b)
            keep[b, kept] = True
        return Reduction(keep=keep)

    def __repr__(self) -> str:
        return "GridDownsample()"


class GridPool(Reducer):
    """Average every cell of a regular grid of cells into one token (2x2 pooling keeps 1/4; scores ignored)."""

    sites = frozenset({"projector"})

    def reduce(self, ctx: ScoreContext, scores: Tensor, candidates: Tensor, n_keep: Tensor) -> Reduction:
        keep = torch.zeros_like(candidates)
        hidden = ctx.hidden.clone()
        for b in range(candidates.shape[0]):
            slots, cells, kept = _layout(ctx, candidates, n_keep, b)
            h = ctx.hidden[b, slots.to(hidden.device)]
            cells = cells.to(hidden.device)
            sums = torch.zeros(kept.numel(), h.shape[-1], dtype=h.dtype, device=h.device).index_add_(0, cells, h)
            counts = torch.bincount(cells, minlength=kept.numel()).to(h.dtype)
            hidden[b, kept.to(hidden.device)] = sums / counts.unsqueeze(-1)
            keep[b, kept] = True
        return Reduction(keep=keep, hidden=hidden)

    def __repr__(self) -> str:
        return "GridPool()"
