"""Rectangular slot layouts for ragged batches.

Samples keep different numbers of tokens, but a batch must stay rectangular. Each row keeps its
chosen slots; shorter rows are topped up with *filler* slots, taken from what the row discards
(old padding and fillers first, then dropped tokens, earliest first). Fillers are masked out as
keys everywhere, so they never influence a real token; their labels are ignored.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["select_slots"]


def select_slots(keep: Tensor, valid: Tensor, width: int | None = None, full: bool = False) -> tuple[Tensor, Tensor]:
    """Pick the slots of the next stage.

    Args:
        keep: ``(B, n)`` slots each row keeps.
        valid: ``(B, n)`` slots that are real tokens now.
        width: the largest number of kept slots in any row, when the caller knows it on the host
            (the engine's plan does); otherwise it is read from ``keep`` (a device->host copy).
        full: the caller knows on the host that every row keeps exactly ``width`` slots: no row
            needs fillers, so the kept slots, already ascending, need no second sort.

    Returns:
        ``(sel, sel_valid)``: ``(B, m)`` slot indices in ascending order (original order is kept)
        and whether each selected slot is a real token (False: filler). ``m`` is the largest
        number of kept slots in any row.
    """
    if width is None:
        width = int(keep.sum(1).max())
    if full:  # kept slots first, in slot order (a stable sort); nothing else is taken
        order = torch.sort(~keep, dim=1, stable=True).indices[:, :width]
        return order, torch.ones(order.shape, dtype=torch.bool, device=order.device)  # contiguous, like `valid`
    # Kept first, then old padding/fillers, then dropped; a stable sort keeps slot order within each.
    group = torch.where(keep, 0, torch.where(valid, 2, 1)).to(torch.uint8)
    order = torch.sort(group, dim=1, stable=True).indices[:, :width]
    sel = torch.sort(order, dim=1).values
    return sel, keep.gather(1, sel)
