"""Drop the patches of a video that barely change from the previous frame (EVS).

Bagrov et al., "Efficient Video Sampling: Pruning Temporally Redundant Tokens for Faster VLM
Inference", arXiv:2510.14624 (the method behind vLLM's ``video_pruning_rate``). Written from the
paper and the serving engines' description of it (nothing copied):

* every token's *change* is ``1 - cos(x[t, i, j], x[t-1, i, j])``: its cosine distance to the token
  at the same position of the previous frame (temporal patch), on the merged features the LLM reads;
* the first frame is always kept whole (it has no previous frame; it gives the full initial scene);
* a video of ``T`` frames of ``h x w`` tokens keeps ``max(h*w, int(T*h*w * ratio))`` tokens: the
  most-changed ones over the whole video (ties: the earlier token), in their original order.

The kept count depends only on the grid and the rate, so an engine can size the prompt before the
video is encoded. ``ratio`` is the kept share: vLLM's ``video_pruning_rate = 1 - ratio``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..interfaces import Reduction, ScoreContext
from .top_k import top_k_mask
from .temporal import TemporalReducer, frames_of

__all__ = ["StaticPatchDrop", "frame_change"]


def frame_change(features: Tensor, frames: int) -> Tensor:
    """``(T*h*w,)`` cosine distance of every token to the same position of the previous frame.

    The first frame has no previous frame and gets ``+inf`` (always kept first).
    """
    x = features.to(torch.promote_types(features.dtype, torch.float32)).reshape(frames, -1, features.shape[-1])
    change = 1.0 - F.cosine_similarity(x[1:], x[:-1], dim=-1)
    first = torch.full_like(x[:1, :, 0], float("inf"))
    return torch.cat([first, change], dim=0).reshape(-1)


class StaticPatchDrop(TemporalReducer):
    """Keep the first frame and the tokens that changed most since the previous frame; drop the rest.

    Scores are ignored (pair it with `NullScorer`); distances use `ScoreContext.match_features`.
    """

    def kept_count(self, grid: tuple[int, int, int], ratio: float) -> int:
        """``max(rows*cols, int(frames*rows*cols * ratio))``: never fewer than the first frame."""
        frames, rows, cols = grid
        return max(rows * cols, int(frames * rows * cols * ratio))

    def reduce(self, ctx: ScoreContext, scores: Tensor, candidates: Tensor, n_keep: Tensor) -> Reduction:
        features = ctx.match_features().to(candidates.device)
        change = torch.zeros(candidates.shape, dtype=torch.float64, device=candidates.device)
        for b in range(candidates.shape[0]):
            slots = self.candidates_of(candidates, b)
            frames, _, _ = frames_of(ctx, slots.numel(), "StaticPatchDrop (EVS)")
            change[b, slots] = frame_change(features[b, slots], frames).to(change.dtype)
        return Reduction(keep=top_k_mask(change, candidates, n_keep))

    def __repr__(self) -> str:
        return "StaticPatchDrop()"
