"""Tiny Qwen2-VL / Qwen2.5-VL batches with longer videos, for the temporal strategies.

`tiny_models_qwen_internvl` gives one 2-frame video; temporal methods need more frames (DyCoke's
windows of 4, EVS's previous frame). Here a row is a list of segments: an int = that many random
text tokens, ``("V", t)`` = a video of ``t`` temporal patches (``2t`` raw frames of 32x32 px, so
``t x 4 x 4`` merged tokens), ``"I"`` = a 32x32 image (4 x 4 merged tokens).

``static`` makes some temporal patches exact copies of the previous one (the same pixels), so their
merged features repeat too: ``{video index: [patch indices]}``.
"""

from __future__ import annotations

import tiny_models as tm
import tiny_models_qwen_internvl as tq
import torch

FRAME = (8, 8)  # patches of one 32x32 frame
MIXED = [[3, ("V", 5), 5], [4, "I", 6], [2, ("V", 4), 3, "I", 4], [9]]
"""Left padded: a 5-patch video; an image; a 4-patch video and an image; text only."""


def video_batch(model, rows=None, *, static: dict[int, list[int]] | None = None, seed: int = 0) -> dict:
    """A left-padded batch as the Qwen processor builds it (see `tiny_models_qwen_internvl._qwen_inputs`)."""
    rows = MIXED if rows is None else rows
    config = model.config
    family = config.model_type
    merge = config.vision_config.spatial_merge_size
    gen = torch.Generator().manual_seed(seed)
    ids, images, videos = [], [], []
    for row in rows:
        out: list[int] = []
        for seg in row:
            if isinstance(seg, int):
                out += tm._random_text(seg, gen)
            elif seg == "I":
                images.append((1, *FRAME))
                out += tq._span(tm.IMAGE_ID, tq.qwen_tokens((1, *FRAME), merge))
            else:
                videos.append((seg[1], *FRAME))
                out += tq._span(tm.VIDEO_ID, tq.qwen_tokens((seg[1], *FRAME), merge))
        ids.append(out)
    inputs = tm._pad(ids, "left")
    del inputs["position_ids"]
    inputs["mm_token_type_ids"] = tq.mm_token_type_ids(inputs["input_ids"])
    vision = config.vision_config
    width = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    per_patch = FRAME[0] * FRAME[1]
    if images:
        grid = torch.tensor(images)
        inputs["pixel_values"] = tm._pixels((int(grid.prod(-1).sum()), width), model.dtype, gen)
        inputs["image_grid_thw"] = grid
    if videos:
        grid = torch.tensor(videos)
        pixels = tm._pixels((int(grid.prod(-1).sum()), width), model.dtype, gen)
        start = 0
        for v, (t, _, _) in enumerate(videos):
            for patch in (static or {}).get(v, []):
                rows_of = slice(start + patch * per_patch, start + (patch + 1) * per_patch)
                pixels[rows_of] = pixels[start + (patch - 1) * per_patch : start + patch * per_patch]
            start += t * per_patch
        inputs["pixel_values_videos"] = pixels
        inputs["video_grid_thw"] = grid
        if family == "qwen2_5_vl":
            inputs["second_per_grid_ts"] = torch.tensor([tq.QWEN2_5_SECONDS_PER_GRID] * len(videos))
    return inputs
