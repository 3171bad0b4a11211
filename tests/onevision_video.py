"""A tiny LLaVA-OneVision with 32 px frames and batches mixing images and longer videos.

`tiny_models.make_llava_onevision` encodes 16 px tiles (4 x 4 patches, pooled to 2 x 2 = 4 tokens per
video frame): too few tokens per frame for temporal methods to choose among. Here the tower's image size
is 32 px (8 x 8 patches, pooled to 4 x 4 = 16 tokens per frame, as `video_inputs` gives Qwen) and the
AnyRes grid points are scaled with it. A row is a list of segments: an int = that many random text
tokens, ``"V"`` = a video of ``FRAMES`` frames (``FRAMES * 16 + 1`` placeholders: the pooled grids and
the newline), ``"I"`` = an AnyRes image. Every video of a batch has ``FRAMES`` frames (OneVision takes
one ``(videos, frames, C, H, W)`` tensor).

``static`` makes some frames exact copies of the previous one: ``{video index: [frame indices]}``.
"""

from __future__ import annotations

import tiny_models as tm
import torch
from transformers import LlavaOnevisionForConditionalGeneration

FRAMES = 5
TILE = 32
PER_FRAME = (TILE // tm.PATCH_PX // 2) ** 2  # pooled tokens of one frame
GRID = FRAMES * PER_FRAME  # pooled tokens of one video (its newline comes after them)
VIDEO_TOKENS = GRID + 1
MIXED = [[3, "V", 5], [4, "I", 6], [2, "V", 3, "I", 4], [9]]
"""Left padded: a video; an image; a video and an image; text only."""


def make_model(attn: str = "sdpa", dtype: torch.dtype = torch.float64, seed: int = 0):
    """Tiny `LlavaOnevisionForConditionalGeneration` whose frames give 4 x 4 pooled tokens."""
    config = tm.llava_onevision_config()
    config.vision_config.image_size = TILE
    config.image_grid_pinpoints = [[2 * h, 2 * w] for h, w in tm.GRID_PINPOINTS]
    return tm._finish(LlavaOnevisionForConditionalGeneration, config, attn, dtype, seed)


def video_batch(model, rows=None, *, static: dict[int, list[int]] | None = None, seed: int = 0) -> dict:
    """A left-padded batch as the OneVision processor builds it (`tiny_models.llava_onevision_inputs`)."""
    rows = MIXED if rows is None else rows
    config = model.config
    gen = torch.Generator().manual_seed(seed)
    ids = [tm._row_ids(r, tm.num_image_tokens(config, r.count("I") > 1), gen, VIDEO_TOKENS) for r in rows]
    inputs = tm._pad(ids, "left")
    per_row = [r.count("I") for r in rows]
    if sum(per_row):
        inputs.update(tm._anyres_pixels(config, sum(per_row), model.dtype, gen))
        inputs["batch_num_images"] = torch.tensor(per_row, dtype=torch.long)
    videos = sum(r.count("V") for r in rows)
    if videos:
        pixels = tm._pixels((videos, FRAMES, 3, TILE, TILE), model.dtype, gen)
        for video, frames in (static or {}).items():
            for frame in frames:
                pixels[video, frame] = pixels[video, frame - 1]
        inputs["pixel_values_videos"] = pixels
    return inputs

