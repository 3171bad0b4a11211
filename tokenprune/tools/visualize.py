"""Kept-patch pictures: which image patches each stage of a reduction kept, overlaid on the image.

`kept_grids` turns the handle's per-stage `selection()` of the last prefill into one boolean
``(rows, cols)`` grid per stage, for one sample whose visual tokens are one image's patches in
row-major order (LLaVA-1.5; Qwen-VL and InternVL after their patch merging, one image or tile).
`draw_stages` renders one panel per stage with the dropped patches dimmed. The official PyramidDrop
code never released its visualisation (its issue #14); this is the project's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["kept_grids", "draw_stages"]


def kept_grids(
    selection: Sequence[tuple[int, torch.Tensor, torch.Tensor]],
    visual_mask: torch.Tensor,
    grid: tuple[int, int],
    num_layers: int,
    sample: int = 0,
) -> list[dict[str, Any]]:
    """Per stage: the layers it spans and which patches of the ``grid`` its slots still hold.

    Args:
        selection: ``handle.selection()`` after a prefill: ``(first_layer, positions, valid)`` per stage.
        visual_mask: ``(L,)`` bool, True at the sample's visual-token positions in ``input_ids``.
        grid: ``(rows, cols)`` of the patches; ``rows * cols`` must equal the visual-token count.
        num_layers: decoder layers of the model (the last stage ends there).
        sample: the batch row to draw.

    Raises:
        ValueError: the grid does not match the number of visual tokens.
    """
    positions = torch.nonzero(visual_mask.cpu(), as_tuple=False).flatten()
    rows, cols = grid
    if rows * cols != positions.numel():
        raise ValueError(
            f"grid {rows}x{cols} = {rows * cols} patches, but the sample has {positions.numel()} visual tokens; "
            "pass the patch grid of one image (e.g. 12x12 for 144 tokens)."
        )
    patch_of = {int(p): k for k, p in enumerate(positions.tolist())}
    stages = []
    for s, (first, idx, valid) in enumerate(selection):
        kept = torch.zeros(rows * cols, dtype=torch.bool)
        for p, ok in zip(idx[sample].tolist(), valid[sample].tolist()):
            if ok and p in patch_of:
                kept[patch_of[p]] = True
        last = selection[s + 1][0] - 1 if s + 1 < len(selection) else num_layers - 1
        stages.append({"first_layer": int(first), "last_layer": int(last), "kept": int(kept.sum()),
                       "total": rows * cols, "mask": kept.view(rows, cols)})  # fmt: skip
    return stages


def draw_stages(image: torch.Tensor, stages: Sequence[dict[str, Any]], path: str, title: str = "") -> None:
    """One panel per stage: the image with dropped patches dimmed and kept ones outlined; PNG at ``path``.

    Args:
        image: ``(3, H, W)`` uint8 (or float in [0, 1]).
        stages: `kept_grids` output.
        path: where to write the PNG.
        title: figure title (e.g. the question and the answers).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    pixels = image.float() / (255.0 if image.dtype == torch.uint8 else 1.0)
    pixels = pixels.permute(1, 2, 0).clamp(0, 1).numpy()
    height, width = pixels.shape[:2]
    fig, axes = plt.subplots(1, len(stages), figsize=(2.6 * len(stages), 3.0), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        mask = stage["mask"]
        rows, cols = mask.shape
        ph, pw = height / rows, width / cols
        shown = pixels.copy()
        for r in range(rows):
            for c in range(cols):
                if not mask[r, c]:
                    y0, x0 = int(round(r * ph)), int(round(c * pw))
                    y1, x1 = int(round((r + 1) * ph)), int(round((c + 1) * pw))
                    shown[y0:y1, x0:x1] = 0.25 * shown[y0:y1, x0:x1] + 0.75 * 0.5
        ax.imshow(shown, interpolation="nearest", extent=(0, width, height, 0))
        if stage["kept"] < stage["total"]:
            for r, c in torch.nonzero(mask).tolist():
                ax.add_patch(Rectangle((c * pw, r * ph), pw, ph, fill=False, lw=0.6, ec="#e8590c"))
        span = f"layer {stage['first_layer']}" if stage["first_layer"] == stage["last_layer"] else \
            f"layers {stage['first_layer']}-{stage['last_layer']}"  # fmt: skip
        ax.set_title(f"{span}\n{stage['kept']}/{stage['total']} patches", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
