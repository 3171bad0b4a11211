"""M-RoPE positions of kept visual tokens in vLLM (Qwen2-VL, Qwen2.5-VL): each keeps its original one.

In the transformers path every kept token keeps the (t, h, w) position it had in the full prompt, and
the text after an image keeps its position too (`tokenprune.encoder.packed`). vLLM computes a
request's M-RoPE positions when the request is added, before the vision tower runs, and which tokens
survive a content-dependent strategy is known only afterwards. So the work is split:

* `mrope_positions` (when the request is added): text positions exactly as for the full prompt; every
  kept placeholder of a pruned image gets the image's origin ``(s, s, s)``; the text after the image
  continues after the full grid, so the decode offset (``mrope_position_delta``) is the full prompt's.
* `attach_offsets` (in the encoder): each kept token's grid offset ``(t, h, w)`` rides with its
  embedding as extra channels (base-128 digits, exact in bfloat16), through vLLM's encoder cache and
  chunked prefill, which slice embeddings by rows.
* `detach_offsets` (when the embeddings are scattered into the prompt): the channels are removed
  and the offsets added to the positions of that step's visual tokens.

The sum is the original position: origin + (t, h, w).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["OFFSET_CHANNELS", "mrope_positions", "grid_offsets", "attach_offsets", "detach_offsets"]

_BASE = 128
_DIGITS = 2
OFFSET_CHANNELS = 3 * _DIGITS
"""Extra channels appended to every visual embedding: ``(t, h, w)``, two base-128 digits each."""
_LIMIT = _BASE**_DIGITS


def mrope_positions(length: int, items: Sequence[tuple[int, int, int, int, float, int]]) -> tuple[Tensor, int]:
    """``(3, length)`` M-RoPE positions of a prompt whose visual items may be shortened, and the decode delta.

    Args:
        length: prompt length (with the shortened placeholder runs).
        items: per visual item, by offset: ``(offset, t, h, w, t_factor, kept)`` with the merged grid
            ``t x h x w`` and ``kept`` placeholders in the prompt (``t*h*w``: not pruned).
    """
    parts: list[np.ndarray] = []
    st = 0
    next_pos = 0
    for offset, t, h, w, t_factor, kept in items:
        text = offset - st
        parts.append(np.broadcast_to(np.arange(text), (3, text)) + next_pos)
        origin = next_pos + text
        grid = np.indices((t, h, w))
        if t_factor != 1.0:
            grid[0] = (grid[0] * t_factor).astype(np.int64)
        if kept == t * h * w:
            parts.append(grid.reshape(3, -1) + origin)
        else:
            parts.append(np.full((3, kept), origin, dtype=np.int64))
        next_pos = origin + int(grid.reshape(3, -1).max()) + 1
        st = offset + kept
    if st < length:
        parts.append(np.broadcast_to(np.arange(length - st), (3, length - st)) + next_pos)
    positions = np.concatenate(parts, axis=1).reshape(3, -1) if parts else np.zeros((3, 0), dtype=np.int64)
    delta = int(max(next_pos, int(positions.max()) + 1 if positions.size else 0) - length)
    return torch.from_numpy(np.ascontiguousarray(positions)).long(), delta


def grid_offsets(index: Tensor, grid: Sequence[int]) -> Tensor:
    """``(k, 3)`` ``(t, h, w)`` of raster indices ``index`` in a merged ``grid = (t, h, w)``."""
    _, h, w = (int(g) for g in grid)
    index = index.long()
    return torch.stack([index // (h * w), (index // w) % h, index % w], dim=1)


def attach_offsets(embeds: Tensor, offsets: Tensor | None) -> Tensor:
    """``(k, d + OFFSET_CHANNELS)``: ``embeds`` with each row's ``(t, h, w)`` offset appended (zeros: none)."""
    k = embeds.shape[0]
    if offsets is None:
        offsets = torch.zeros(k, 3, dtype=torch.long, device=embeds.device)
    if bool((offsets >= _LIMIT).any()):
        raise ValueError(f"A visual token's grid offset reaches {int(offsets.max())}; at most {_LIMIT - 1} is supported.")
    digits = torch.stack([offsets // _BASE, offsets % _BASE], dim=-1).reshape(k, OFFSET_CHANNELS)
    return torch.cat([embeds, digits.to(device=embeds.device, dtype=embeds.dtype)], dim=-1)


def detach_offsets(embeds: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of `attach_offsets`: ``(features (k, d), offsets (k, 3) long)``."""
    features, digits = embeds[..., :-OFFSET_CHANNELS], embeds[..., -OFFSET_CHANNELS:]
    digits = digits.round().long().reshape(-1, 3, _DIGITS)
    return features, digits[..., 0] * _BASE + digits[..., 1]
