"""Projector-side selection at the feature layer of a fixed-grid tower (LLaVA-1.5's CLIP, SigLIP).

One image per row, every image with the same number of patch tokens; the class/register slots come
first and are always kept. `encoder.vlm.VisionBridge` calls this from a hook on the tower, and a
serving engine that builds the model from its own modules calls it with the features its tower
produced (`tokenprune.projector_selection`), so both keep the same tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..engine.selection import select
from .context import EncoderContext

__all__ = ["select_patches"]


def select_patches(selection: Any, ctx: EncoderContext, kept: int) -> tuple[Tensor, Tensor]:
    """Choose ``kept`` patch tokens of every image.

    Args:
        selection: the strategy's projector part (a `ProjectorSelection`: ``scorer`` and ``reducer``).
        ctx: the context at the input of the block after the feature layer (``hidden`` is
            ``(B, n, d)`` with the ``num_prefix`` class/register slots first; ``visual`` marks the patches).
        kept: patch tokens each image keeps.

    Returns:
        ``(index, features)``: ``(B, num_prefix + kept)`` slots kept, in raster order, prefix slots first;
        ``(B, num_prefix + kept, d)`` their features (merged features where the reducer merges).

    Raises:
        ScheduleError: the reducer kept another number of tokens.
    """
    batch, prefix = ctx.hidden.shape[0], ctx.num_prefix
    visual = ctx.visual
    chosen = select(
        ctx, selection.scorer, selection.reducer, visual, torch.full((batch,), kept, device=visual.device),
        protected=~visual, expect=prefix + kept,
        miscount=lambda counts: f"The projector reducer kept {[c - prefix for c in counts]} patch tokens per image, not {kept}.",
    )  # fmt: skip
    return chosen.index, chosen.features
