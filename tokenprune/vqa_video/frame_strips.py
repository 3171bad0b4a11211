"""Frame strips: which tokens of a video each stage kept, one row of frames per stage.

After a wrapped prefill, `video_stages` reads which of one video's merged tokens survived the
projector-side (temporal) selection (``handle.input_columns()``: the original prompt column of every
slot the LLM received) and every LLM-side stage (``handle.selection()``: kept slots per stage, in the
LLM's columns), as ``(frames, rows, cols)`` masks over the video's token grid. `draw_strips` renders
one row per stage and one panel per temporal patch, dropped tokens dimmed, pixel-exact (`StripLayout`),
so what is drawn can be checked against the kept indices. ``tokenprune visualize --video`` uses both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["video_stages", "draw_strips", "StripLayout", "panel", "dim"]


def video_stages(handle: Any, input_ids: torch.Tensor, video_token_id: int, grid: tuple[int, int, int], sample: int = 0) -> list[dict[str, Any]]:
    """Per stage: a name and the ``(frames, rows, cols)`` bool mask of the video's kept tokens.

    Args:
        handle: the wrap handle, after one prefill.
        input_ids: the ``(B, L)`` prompt ids as given to the model.
        video_token_id: the video placeholder id.
        grid: ``(frames, rows, cols)`` merged token grid of the sample's (single) video.
        sample: the batch row.

    Raises:
        ValueError: the row's video placeholders do not match ``grid``.
    """
    video_cols = (input_ids[sample] == video_token_id).nonzero()[:, 0].cpu()
    frames, rows, cols = grid
    if video_cols.numel() != frames * rows * cols:
        raise ValueError(f"Row {sample} holds {video_cols.numel()} video tokens, not the {frames}x{rows}x{cols} grid.")
    index_of = {int(c): k for k, c in enumerate(video_cols.tolist())}
    columns = handle.input_columns()  # (B, L') original column of every slot, or None (no compaction)
    llm_cols = columns[sample].cpu() if columns is not None else torch.arange(input_ids.shape[1])

    def mask_of(original: list[int]) -> torch.Tensor:
        mask = torch.zeros(frames * rows * cols, dtype=torch.bool)
        for c in original:
            if c in index_of:
                mask[index_of[c]] = True
        return mask.view(frames, rows, cols)

    stages = [{"name": "projector" if columns is not None else "input", "mask": mask_of(llm_cols[llm_cols >= 0].tolist())}]
    selection = handle.selection() if getattr(handle, "stats", None) is not None else []
    layers = handle.num_layers
    for s, (first, idx, valid) in enumerate(selection[1:] if selection else [], start=1):
        slots = idx[sample][valid[sample]].cpu()
        original = llm_cols[slots.clamp(max=llm_cols.numel() - 1)].tolist()
        last = selection[s + 1][0] - 1 if s + 1 < len(selection) else layers - 1
        stages.append({"name": f"layers {first}-{last}", "mask": mask_of(original)})
    for stage in stages:
        stage["kept"], stage["total"] = int(stage["mask"].sum()), frames * rows * cols
    return stages


@dataclass(frozen=True)
class StripLayout:
    """Where `draw_strips` puts each panel: a title band, a column header, then one row per stage.

    Panels are frames enlarged ``zoom`` times by pixel repetition (no resampling), so every token's
    cell is an exact block of pixels: ``panel_box(stage, k)`` is the ``(top, left)`` of stage
    ``stage``'s panel for temporal patch ``k``, and a panel is ``panel_h x panel_w`` pixels.
    """

    stages: int
    patches: int
    panel_h: int
    panel_w: int
    label_w: int = 118
    title_h: int = 22
    header_h: int = 14
    gap: int = 4

    @classmethod
    def of(cls, frames: np.ndarray, stages: Sequence[dict[str, Any]], zoom: int = 3) -> StripLayout:
        """The layout of ``frames`` (``(F, H, W, 3)``) drawn for ``stages`` at ``zoom``."""
        _, height, width, _ = frames.shape
        return cls(len(stages), int(stages[0]["mask"].shape[0]), height * zoom, width * zoom)

    def panel_box(self, stage: int, k: int) -> tuple[int, int]:
        """``(top, left)`` pixel of the panel of ``stage`` (row) and temporal patch ``k`` (column)."""
        return (self.title_h + self.header_h + stage * (self.panel_h + self.gap),
                self.label_w + k * (self.panel_w + self.gap))  # fmt: skip

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the whole picture (a gap's margin after the last row and column)."""
        return self.panel_box(self.stages, self.patches)


def dim(pixels: np.ndarray) -> np.ndarray:
    """How a dropped token's pixels are drawn: a quarter of the frame over mid grey (uint8 in, uint8 out)."""
    return np.round(0.25 * pixels.astype(np.float32) + 0.75 * 127.5).astype(np.uint8)


def panel(frame: np.ndarray, mask: np.ndarray | torch.Tensor, zoom: int = 3) -> np.ndarray:
    """One frame (``(H, W, 3)`` uint8) with the cells of dropped tokens dimmed, enlarged ``zoom`` times.

    ``mask`` is the frame's ``(rows, cols)`` kept mask; pixel ``(y, x)`` belongs to cell
    ``(y * rows // H, x * cols // W)``, so sizes that do not divide evenly still tile the frame.
    """
    mask = np.asarray(mask, dtype=bool)
    rows, cols = mask.shape
    height, width = frame.shape[:2]
    cell_rows = np.arange(height) * rows // height
    cell_cols = np.arange(width) * cols // width
    kept = mask[cell_rows[:, None], cell_cols[None, :]]
    out = np.where(kept[..., None], frame, dim(frame))
    return out.repeat(zoom, axis=0).repeat(zoom, axis=1)


def draw_strips(frames: np.ndarray, stages: Sequence[dict[str, Any]], path: str, title: str = "", frames_per_patch: int = 2,
                zoom: int = 3) -> StripLayout:  # fmt: skip
    """One row per stage, one panel per temporal patch (its first frame), dropped tokens dimmed; PNG at ``path``.

    Drawn pixel-exact with PIL (`StripLayout`, `panel`), so a test can read the PNG back and find
    every token's kept or dropped state where the layout says.

    Args:
        frames: ``(F, H, W, 3)`` uint8 raw frames.
        stages: `video_stages` output.
        path: where to write the PNG.
        title: the line above the strips.
        frames_per_patch: raw frames per temporal patch.
        zoom: pixel repetition of every frame.

    Returns:
        The layout used.
    """
    from PIL import Image, ImageDraw

    layout = StripLayout.of(frames, stages, zoom)
    height, width = layout.size
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    for s, stage in enumerate(stages):
        mask = np.asarray(stage["mask"], dtype=bool)
        for k in range(layout.patches):
            top, left = layout.panel_box(s, k)
            canvas[top : top + layout.panel_h, left : left + layout.panel_w] = panel(frames[k * frames_per_patch], mask[k], zoom)
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((4, 4), title, fill=(0, 0, 0))
    for k in range(layout.patches):
        _, left = layout.panel_box(0, k)
        draw.text((left + 2, layout.title_h), f"t={k}", fill=(80, 80, 80))
    for s, stage in enumerate(stages):
        top, _ = layout.panel_box(s, 0)
        draw.text((4, top + 4), f"{stage['name']}\n{stage['kept']}/{stage['total']} kept", fill=(0, 0, 0))
    image.save(path)
    return layout
