"""Give unique frames more tokens, then keep each frame's most distinctive tokens (VidCom2).

Liu et al., "Video Compression Commander: Plug-and-Play Inference Acceleration for Video Large
Language Models", EMNLP 2025, arXiv:2505.14454 (vLLM's ``--video-retention-ratio``). Written from
the paper and its official code's conventions (nothing copied):

1. features: the half of the feature channels with the lowest variance over the video's tokens,
   each token L2-normalised (the official code's choice);
2. similarity of a token to a centre ``c``: a multi-scale Gaussian kernel
   ``sum_a exp(-||x - c||^2 / (2a))`` over ``a in {1/8, 1/4, 1/2, 1, 2}``; ``c`` is the mean token of
   the whole video (``s_video``) or of the token's frame (``s_frame``);
3. frame budget: a frame's uniqueness is ``-mean(s_video)`` over its tokens; ``p = softmax(u / 0.01)``
   and frame ``t`` gets the share ``ratio * (1 + p_t - mean(p))`` of its tokens (at most all);
4. within a frame, keep the tokens with the lowest ``s_video + s_frame`` (unlike both the video and
   their frame), in their original order.

Difference from the official code: the video's total is fixed at ``max(frames, int(tokens * ratio))``
(a pure function of the grid and the ratio, as a serving engine needs to size the prompt) and is
split over the frames in proportion to step 3's shares (largest remainders; every frame keeps at
least one token); the official code rounds each frame's share on its own, so its total varies a
little from video to video.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..interfaces import Reduction, ScoreContext
from .top_k import top_k_mask
from .temporal import TemporalReducer, frames_of

__all__ = ["FrameUniquenessDrop", "allocate", "uniqueness_scores", "KERNEL_SCALES", "TEMPERATURE"]

KERNEL_SCALES = (0.125, 0.25, 0.5, 1.0, 2.0)
"""The Gaussian kernel widths ``a`` (2^-3 .. 2^1)."""
TEMPERATURE = 0.01
"""Softmax temperature of the frame uniqueness."""


def _gaussian(x: Tensor, center: Tensor) -> Tensor:
    distance = ((x - center) ** 2).sum(-1)
    return sum(torch.exp(-distance / (2 * a)) for a in KERNEL_SCALES)


def uniqueness_scores(features: Tensor, frames: int) -> tuple[Tensor, Tensor]:
    """``(token score (T, hw), frame weight (T,))``: lower token scores are more distinctive.

    Args:
        features: ``(T*hw, d)`` one video's merged features in raster order.
        frames: ``T``.
    """
    x = features.to(torch.promote_types(features.dtype, torch.float32))
    channels = max(1, int(x.shape[-1] * 0.5))
    low = torch.sort(torch.topk(x.var(0, unbiased=False), channels, largest=False).indices).values
    x = F.normalize(x[:, low].reshape(frames, -1, channels), dim=-1)
    s_video = _gaussian(x, x.mean(dim=(0, 1), keepdim=True))
    s_frame = _gaussian(x, x.mean(dim=1, keepdim=True))
    uniqueness = -s_video.mean(-1)
    p = torch.softmax((uniqueness - uniqueness.max()) / TEMPERATURE, dim=0)
    return s_video + s_frame, 1.0 + p - p.mean()


def allocate(weights: list[float], total: int, cap: int) -> list[int]:
    """Split ``total`` into integers proportional to ``weights``, each in ``[1, cap]`` (largest remainders).

    Requires positive weights and ``len(weights) <= total <= len(weights) * cap``. Ties go to the
    earlier entry.
    """
    n = len(weights)
    if not n <= total <= n * cap or any(w <= 0 for w in weights):
        raise ValueError(f"cannot split {total} tokens over {n} frames of {cap} by weights {weights}")
    counts = [1] * n
    left = total - n
    open_ = [i for i in range(n) if counts[i] < cap]
    while left > 0 and open_:
        weight = sum(weights[i] for i in open_)
        share = {i: weights[i] / weight * left for i in open_}
        grant = {i: min(cap - counts[i], math.floor(share[i])) for i in open_}
        if sum(grant.values()) == 0:  # hand out the remainders, largest first
            for i in sorted(open_, key=lambda i: (-(share[i] - math.floor(share[i])), i))[:left]:
                grant[i] = 1
        for i, g in grant.items():
            counts[i] += g
            left -= g
        open_ = [i for i in open_ if counts[i] < cap]
    return counts


class FrameUniquenessDrop(TemporalReducer):
    """Per-frame budgets by frame uniqueness, then the most distinctive tokens of each frame."""

    def kept_count(self, grid: tuple[int, int, int], ratio: float) -> int:
        """``max(frames, int(frames*rows*cols * ratio))``: at least one token per frame."""
        frames, rows, cols = grid
        return max(frames, int(frames * rows * cols * ratio))

    def reduce(self, ctx: ScoreContext, scores: Tensor, candidates: Tensor, n_keep: Tensor) -> Reduction:
        features = ctx.match_features().to(candidates.device)
        keep = torch.zeros_like(candidates)
        for b in range(candidates.shape[0]):
            slots = self.candidates_of(candidates, b)
            frames, rows, cols = frames_of(ctx, slots.numel(), "FrameUniquenessDrop (VidCom2)")
            per_frame = rows * cols
            token_score, weight = uniqueness_scores(features[b, slots], frames)
            budgets = allocate(weight.tolist(), int(n_keep[b]), per_frame)
            everything = torch.ones(frames, per_frame, dtype=torch.bool, device=keep.device)
            kept = top_k_mask(-token_score, everything, torch.tensor(budgets, device=keep.device))
            keep[b, slots] = kept.reshape(-1).to(keep.device)
        return Reduction(keep=keep)

    def __repr__(self) -> str:
        return "FrameUniquenessDrop()"
