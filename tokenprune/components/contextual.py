"""VisionZip's contextual tokens: what the dominant tokens leave behind, merged into a few tokens.

Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language Models", CVPR 2025,
arXiv:2412.04467 (Sec. 3; written from the paper and the research note, nothing copied).

The top-scoring candidates stay as *dominant* tokens. The others, in their original order, are
split: every ``step``-th of them (``step = max(1, remaining // contextual)``) becomes a *target*;
each remaining token joins its most similar target (cosine of `ScoreContext.match_features`; at
the projector of a vision tower, the head-mean keys of the block that would read the features,
VisionZip's metric). A target becomes ``h_t + mean(h_i of its members)`` (the official formula:
the target plus the mean of its group, not the group's average).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from ..interfaces import Reducer, Reduction, ScoreContext
from .top_k import top_k_mask

__all__ = ["ContextualMerge"]


class ContextualMerge(Reducer):
    """Keep dominant tokens by score; merge the rest into evenly spaced contextual tokens.

    Of a row's ``n_keep`` slots, ``round(n_keep * contextual)`` are contextual and the others
    dominant. Kept slots stay in their original order (dominant and contextual interleaved), so the
    output keeps the raster order of the image; VisionZip appends the contextual tokens after the
    dominant ones instead.

    Args:
        contextual: share of the kept tokens that are contextual, in [0, 1) (VisionZip's LLaVA-1.5
            settings 54+10, 108+20, 162+30 are about 0.16).
    """

    sites = frozenset({"encoder", "projector"})

    def __init__(self, contextual: float = 0.16):
        if not 0.0 <= contextual < 1.0:
            raise ValueError(f"ContextualMerge contextual share {contextual} is outside [0, 1).")
        self.contextual = contextual

    def reduce(self, ctx: ScoreContext, scores: Tensor, candidates: Tensor, n_keep: Tensor) -> Reduction:
        n_keep = n_keep.to(candidates.device)
        n_ctx = torch.minimum(torch.round(n_keep.double() * self.contextual).long(), n_keep)
        keep = top_k_mask(scores, candidates, n_keep - n_ctx)  # dominant tokens
        hidden = ctx.hidden.clone()
        features = ctx.match_features().to(candidates.device)
        for b in range(candidates.shape[0]):
            k = int(n_ctx[b])
            rest = torch.nonzero(candidates[b] & ~keep[b], as_tuple=False)[:, 0]
            if k == 0 or rest.numel() == 0:
                continue
            k = min(k, rest.numel())
            step = max(1, rest.numel() // k)
            is_target = torch.zeros(rest.numel(), dtype=torch.bool, device=rest.device)
            is_target[torch.arange(k, device=rest.device) * step] = True
            targets, members = rest[is_target], rest[~is_target]
            keep[b, targets] = True
            if members.numel() == 0:
                continue
            f = F.normalize(features[b].to(torch.promote_types(features.dtype, torch.float32)), dim=-1)
            group = (f[members] @ f[targets].T).argmax(-1)  # first maximum on ties
            h = ctx.hidden[b]
            sums = torch.zeros(k, h.shape[-1], dtype=h.dtype, device=h.device).index_add_(0, group.to(h.device), h[members.to(h.device)])
            counts = torch.zeros(k, dtype=h.dtype, device=h.device).index_add_(
                0, group.to(h.device), torch.ones(members.numel(), dtype=h.dtype, device=h.device)
            )
            has = counts > 0
            merged = h[targets.to(h.device)] + sums / counts.clamp(min=1).unsqueeze(-1)
            hidden[b, targets.to(h.device)] = torch.where(has.unsqueeze(-1), merged, h[targets.to(h.device)])
        return Reduction(keep=keep, hidden=hidden)

    def __repr__(self) -> str:
        return f"ContextualMerge(contextual={self.contextual})"
