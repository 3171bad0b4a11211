"""Drop the tokens of a video that repeat an earlier frame of their window (DyCoke's temporal stage).

Tao et al., "DyCoke: Dynamic Compression of Tokens for Fast Video Large Language Models", CVPR 2025,
arXiv:2411.15024, stage 1 ("token temporal merging"). Written from the paper and its official code's
conventions (nothing copied):

* frames are taken in windows of 4; the first frame of a window (the pivot) is kept whole;
* frames 2 and 4 of a window are compared with frames 1 and 3, frame 3 with the pivot: the cosine
  similarity of every token with the token at the same position of that reference frame;
* each compared frame keeps its ``int(ratio * rows * cols)`` least similar tokens (ties: the earlier
  token); the others are "merged" into the reference frame's token, i.e. removed, since that token
  already stands for them (the official code removes them the same way).

A video of ``T`` frames keeps ``rows*cols`` per window plus ``int(ratio*rows*cols)`` per other frame:
a pure function of the grid and the ratio. A last window shorter than 4 frames follows the same
rules for the frames it has (the official code skips the frame-3 step of the last window and a
lone last frame; here every window is treated alike).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..interfaces import Reduction, ScoreContext
from .top_k import top_k_mask
from .temporal import TemporalReducer, frames_of

__all__ = ["WindowRedundancyDrop", "WINDOW", "REFERENCE"]

WINDOW = 4
"""Frames per window (the paper's K = 4)."""
REFERENCE = {1: 0, 2: 0, 3: 2}
"""Offset within a window -> offset of the frame it is compared with (offset 0 is the pivot)."""


class WindowRedundancyDrop(TemporalReducer):
    """Keep each window's pivot frame whole and the least redundant tokens of its other frames."""

    def kept_count(self, grid: tuple[int, int, int], ratio: float) -> int:
        """``rows*cols`` per window + ``int(ratio*rows*cols)`` per non-pivot frame."""
        frames, rows, cols = grid
        per_frame = rows * cols
        pivots = -(-frames // WINDOW)
        return pivots * per_frame + (frames - pivots) * int(ratio * per_frame)

    def reduce(self, ctx: ScoreContext, scores: Tensor, candidates: Tensor, n_keep: Tensor) -> Reduction:
        features = ctx.match_features().to(candidates.device)
        keep = torch.zeros_like(candidates)
        for b in range(candidates.shape[0]):
            slots = self.candidates_of(candidates, b)
            frames, rows, cols = frames_of(ctx, slots.numel(), "WindowRedundancyDrop (DyCoke)")
            per_frame = rows * cols
            x = features[b, slots].to(torch.promote_types(features.dtype, torch.float32)).reshape(frames, per_frame, -1)
            kept = torch.zeros(frames, per_frame, dtype=torch.bool, device=keep.device)
            budget = self._per_frame(int(n_keep[b]), frames, per_frame)
            everything = torch.ones(1, per_frame, dtype=torch.bool, device=keep.device)
            for t in range(frames):
                offset = t % WINDOW
                if offset == 0:
                    kept[t] = True
                    continue
                similarity = F.cosine_similarity(x[t], x[t - offset + REFERENCE[offset]], dim=-1)
                kept[t] = top_k_mask(-similarity.unsqueeze(0), everything, torch.tensor([budget]))[0]
            keep[b, slots] = kept.reshape(-1)
        return Reduction(keep=keep)

    @staticmethod
    def _per_frame(total: int, frames: int, per_frame: int) -> int:
        """Tokens each non-pivot frame keeps, recovered from the planned total (`kept_count`)."""
        pivots = -(-frames // WINDOW)
        others = frames - pivots
        return (total - pivots * per_frame) // others if others else 0

    def __repr__(self) -> str:
        return "WindowRedundancyDrop()"
