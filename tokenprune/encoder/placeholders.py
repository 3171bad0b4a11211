"""Shrink each image's placeholder run in ``input_ids`` to the number of features that survive.

A VLM scatters one projector output into each ``<image>`` placeholder and checks that the counts
match. When the vision side hands fewer features to the projector, every image keeps only the
first ``kept`` of its ``per_image`` placeholders. Rows that lose different numbers of tokens
(different image counts, a text-only row) are re-padded on their padding side with masked slots,
so the batch stays rectangular and each row reads exactly as the shorter prompt would alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import UnsupportedFeatureError

__all__ = ["Compaction", "plan_compaction", "plan_removal", "COMPACTION_ATTR"]

COMPACTION_ATTR = "_tokenprune_compaction"
"""Attribute under which a `Compaction` is stored on the KV cache of a generation (for decode steps)."""


@dataclass
class Compaction:
    """How a prompt of length ``length`` maps onto the shortened one.

    Attributes:
        length: original prompt length ``L``.
        idx: ``(B, W)`` original column of every new column (``-1`` for a new padding slot).
        removed: ``(B,)`` placeholders removed from each row (old padding columns are dropped
            too, but they do not count: positions follow the real tokens).
    """

    length: int
    idx: Tensor
    removed: Tensor

    @property
    def real(self) -> Tensor:
        """``(B, n)`` True for columns that hold a real token (False for re-padding)."""
        return self.idx >= 0

    def take(self, t: Tensor, fill: float | int) -> Tensor:
        """Columns of ``t`` (``(B, L, ...)``) in the new layout; new padding slots get ``fill``."""
        idx = self.idx.to(t.device)
        view = idx.clamp(min=0).view(*idx.shape, *([1] * (t.dim() - 2))).expand(*idx.shape, *t.shape[2:])
        out = t.gather(1, view)
        real = self.real.to(t.device).view(*idx.shape, *([1] * (t.dim() - 2)))
        return torch.where(real, out, torch.full((), fill, dtype=t.dtype, device=t.device))

    def decode_mask(self, mask: Tensor) -> Tensor:
        """A decode step's 2-D mask (prompt + generated columns) in the new layout."""
        return torch.cat([self.take(mask[:, : self.length], 0), mask[:, self.length :]], dim=1)


def plan_compaction(
    placeholders: Tensor, attention_mask: Tensor | None, per_image: int, kept: int
) -> Compaction | None:
    """Which columns survive when every image keeps the first ``kept`` of its ``per_image`` placeholders.

    Args:
        placeholders: ``(B, L)`` True at image placeholders.
        attention_mask: ``(B, L)`` 2-D padding mask, or ``None``.

    Returns:
        ``None`` when nothing is removed.

    Raises:
        UnsupportedFeatureError: a row's placeholder count is not a multiple of ``per_image``.
    """
    if kept >= per_image:
        return None
    device = placeholders.device
    valid = torch.ones_like(placeholders) if attention_mask is None else attention_mask.to(device).bool()
    placeholders = placeholders & valid
    counts = placeholders.sum(1)
    if bool((counts % per_image != 0).any()):
        raise UnsupportedFeatureError(
            f"Rows hold {counts.tolist()} image placeholders, not a multiple of {per_image} per image. "
            "Encoder-side reduction needs the processor's fixed placeholder count per image."
        )
    rank = placeholders.long().cumsum(1) - 1
    return plan_removal(placeholders & (rank % per_image >= kept), attention_mask)


def plan_removal(drop: Tensor, attention_mask: Tensor | None) -> Compaction | None:
    """Which columns survive when the columns marked in ``drop`` leave the prompt.

    The general form of `plan_compaction`: any set of placeholder columns may go (families whose
    images hold different numbers of tokens, and selections that keep other than the first ones).

    Args:
        drop: ``(B, L)`` True at the columns that leave (padding columns are ignored).
        attention_mask: ``(B, L)`` 2-D padding mask, or ``None``.

    Returns:
        ``None`` when nothing is removed.
    """
    batch, length = drop.shape
    device = drop.device
    valid = torch.ones_like(drop) if attention_mask is None else attention_mask.to(device).bool()
    drop = drop & valid
    removed = drop.sum(1)
    if not bool(removed.any()):
        return None
    survives = valid & ~drop  # old padding goes too: rows are re-padded to the new width
    new_len = survives.sum(1)
    width = int(new_len.max())
    positions = torch.arange(length, device=device)
    kept_cols = torch.sort(torch.where(survives, positions, positions + length), dim=1).values  # survivors first
    right_padded = attention_mask is not None and bool((~valid[:, -1]).any())
    cols = torch.arange(width, device=device).expand(batch, -1)
    shift = torch.zeros_like(new_len) if right_padded else width - new_len
    src = cols - shift.unsqueeze(1)
    real = (src >= 0) & (src < new_len.unsqueeze(1))
    idx = torch.where(real, kept_cols.gather(1, src.clamp(0, length - 1)), -1)
    return Compaction(length=length, idx=idx, removed=removed)
