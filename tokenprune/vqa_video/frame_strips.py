"""Frame strips: which tokens of a video each stage kept, one row of frames per stage.

After a wrapped prefill, `video_stages` reads which of one video's merged tokens survived the
projector-side (temporal) selection (``handle.input_columns()``: the original prompt column of every
slot the LLM received) and every LLM-side stage (``handle.selection()``: kept slots per stage, in the
LLM's columns), as ``(frames, rows, cols)`` masks over the video's token grid. `draw_strips` renders
one row per stage and one panel per temporal patch, dropped tokens dimmed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["video_stages", "draw_strips"]


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


def draw_strips(frames: np.ndarray, stages: Sequence[dict[str, Any]], path: str, title: str = "", frames_per_patch: int = 2) -> None:
    """One row per stage, one panel per temporal patch (its first frame), dropped tokens dimmed; PNG at ``path``.

    Args:
        frames: ``(F, H, W, 3)`` uint8 raw frames.
        stages: `video_stages` output.
        path: where to write the PNG.
        title: figure title.
        frames_per_patch: raw frames per temporal patch.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = stages[0]["mask"].shape[0]
    fig, axes = plt.subplots(len(stages), t, figsize=(1.2 * t, 1.35 * len(stages) + 0.4), squeeze=False)
    for row, stage in zip(axes, stages):
        mask = stage["mask"]
        _, rows, cols = mask.shape
        for k, ax in enumerate(row):
            pixels = frames[k * frames_per_patch].astype(np.float32) / 255.0
            height, width = pixels.shape[:2]
            ph, pw = height / rows, width / cols
            for r in range(rows):
                for c in range(cols):
                    if not mask[k, r, c]:
                        y0, y1, x0, x1 = int(r * ph), int((r + 1) * ph), int(c * pw), int((c + 1) * pw)
                        pixels[y0:y1, x0:x1] = 0.25 * pixels[y0:y1, x0:x1] + 0.75 * 0.5
            ax.imshow(pixels, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if k == 0:
                ax.set_ylabel(f"{stage['name']}\n{stage['kept']}/{stage['total']}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
