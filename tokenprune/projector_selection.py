"""Projector-side selection as plain functions, for engines that run their own copy of the model.

`tokenprune.wrap` runs a `ProjectorSelection` from hooks on a transformers VLM
(`tokenprune.encoder.vlm` for a tower with a fixed patch grid, `tokenprune.encoder.packed` for
towers that pack every image into one sequence). A serving engine such as vLLM builds the same
model from its own modules, so those hooks have nothing to attach to; it calls these functions with
the features its tower produced instead. They run the strategy's own scorer and reducer with the
same context objects, counts and checks as the hooks, so both paths keep the same tokens.

* `kept_patch_count` / `select_patches`: one image per row, every image of the same patch count
  (LLaVA-1.5: CLIP or SigLIP features of the layer the projector reads, class token included).
* `kept_packed_count` / `select_packed`: images of any grid, one at a time after the patch merger
  (Qwen2-VL, Qwen2.5-VL), through `PackedSelector.select` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import torch
from torch import Tensor

from .vision_language import ProjectorSelection
from .encoder.packed import PackedRecord, PackedSelector
from .encoder.patches import select_patches  # the hooks' own selection step, shared
from .errors import ScheduleError

__all__ = ["kept_patch_count", "select_patches", "kept_packed_count", "select_packed"]


def kept_patch_count(selection: ProjectorSelection, patches: int) -> int:
    """Patch tokens one image keeps on a fixed-grid tower (the count `VisionBridge` plans)."""
    return min(int(patches * selection.ratio), patches)


def kept_packed_count(selection: ProjectorSelection, tokens: int) -> int:
    """Tokens one image of ``tokens`` merged tokens keeps on a packed tower (`PackedSelector.kept_count`)."""
    return PackedSelector(None, selection).kept_count(tokens)


def select_packed(
    selection: ProjectorSelection,
    features: list[Tensor],
    grids: Tensor,
    received: Callable[[], Tensor],
    tower: torch.nn.Module | None = None,
) -> tuple[list[Tensor], list[Tensor]]:
    """Select every image's tokens after the patch merger, exactly as `PackedSelector.select` does.

    Args:
        selection: the strategy's projector part.
        features: ``(n_i, d)`` merged tokens of each image, in order.
        grids: ``(images, 3)`` merged-token grid ``(frames, rows, cols)`` of each image.
        received: ``() -> (sum n_i,)`` attention each merged token receives in the tower's last
            block (called only by scorers that need it).
        tower: the vision tower (what the contexts report as their ``layer``).

    Returns:
        ``(kept features, kept index)`` per image: ``(k_i, d)`` and ``(k_i,)`` raster indices.
    """
    record = PackedRecord(grids.long(), received)
    output = SimpleNamespace(pooler_output=tuple(features))
    vision = SimpleNamespace(tower=tower, describe=lambda _: record, pack=tuple)  # what `PackedVision` answers
    reduced, keep, counts = PackedSelector(vision, selection).select(output)
    index, start = [], 0
    for n, count in zip((int(g.prod()) for g in record.grids), counts):
        part = torch.nonzero(keep[start : start + n], as_tuple=False)[:, 0]
        if part.numel() != count:
            raise ScheduleError(f"An image kept {part.numel()} tokens but the selection reported {count}.")
        index.append(part)
        start += n
    return list(reduced.pooler_output), index
