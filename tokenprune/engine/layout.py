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


def select_slots(keep: Tensor, valid: Tensor, width: int | None = None) -> tuple[Tensor, Tensor]:
    """Pick the slots of the next stage.

    Args:
        keep: ``(B, n)`` slots each row keeps.
        valid: ``(B, n)`` slots that are real tokens now.
        width: the largest number of kept slots in any row, when the caller knows it on the host
            (the engine's plan does); otherwise it is read from ``keep`` (a device->host copy).

    Returns:
        ``(sel, sel_valid)``: ``(B, m)`` slot indices in ascending order (original order is kept)
        and whether each selected slot is a real token (False: filler). ``m`` is the largest
        number of kept slots in any row.
    """
    n = keep.shape[1]
    if width is None:
        width = int(keep.sum(1).max())
    group = torch.where(keep, 0, torch.where(valid, 2, 1))  # kept, then old padding/fillers, then dropped
    order = torch.argsort(group * (n + 1) + torch.arange(n, device=keep.device), dim=1)[:, :width]
    sel = torch.sort(order, dim=1).values
    return sel, keep.gather(1, sel)
