"""Bipartite soft matching (ToMe): merge the most redundant tokens without ranking importance.

Written from the paper (Bolya et al., ICLR 2023, arXiv:2210.09461, Sec. 3): the candidate
tokens are split alternately into two sets A and B; every token of A finds its most similar token
of B (cosine of the similarity features); the ``r`` A-tokens with the most similar partner merge
into it (size-weighted mean). B tokens are never sources, so one round removes at most half the
candidates; asking for more runs further rounds on what is left (features merge too). Scores are
ignored: this reducer decides by redundancy alone.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from ..interfaces import Reducer, Reduction, ScoreContext
from .merge import merge_into
from .top_k import top_k_mask

__all__ = ["BipartiteMerge"]


def _members(mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(B, m)`` slot indices of each row's True entries (ascending) and which entries are real."""
    n = mask.shape[1]
    width = max(int(mask.sum(1).max()), 1)
    positions = torch.arange(n, device=mask.device)
    order = torch.sort(torch.where(mask, positions, positions + n), dim=1).values[:, :width]
    real = order < n
    return order.clamp(max=n - 1), real


class BipartiteMerge(Reducer):
    """ToMe's bipartite soft matching with size-weighted merging.

    Only the A x B similarities are computed (a quarter of all pairs).

    Args:
        proportional_attention: add ``log(size)`` to later blocks' attention logits (ToMe uses it
            for supervised checkpoints, not for MAE ones).
    """

    sites = frozenset({"encoder", "projector"})

    def __init__(self, proportional_attention: bool = True):
        self.proportional_attention = proportional_attention

    def reduce(self, ctx: ScoreContext, scores: Tensor, candidates: Tensor, n_keep: Tensor) -> Reduction:
        hidden = ctx.hidden
        device = candidates.device
        features = ctx.match_features().to(device)
        sizes = ctx.sizes if ctx.sizes is not None else torch.ones(candidates.shape, dtype=hidden.dtype, device=device)
        sizes = sizes.to(hidden.dtype)
        alive = candidates.clone()
        remaining = (candidates.sum(1) - n_keep.to(device)).clamp(min=0)
        while bool((remaining > 0).any()):
            rank = alive.long().cumsum(1) - 1
            idx_a, real_a = _members(alive & (rank % 2 == 0))
            idx_b, real_b = _members(alive & (rank % 2 == 1))
            can_merge = real_b.any(1)
            if not bool((can_merge & (remaining > 0)).any()):
                break  # a single candidate left: nothing to merge into
            metric = F.normalize(features.to(torch.promote_types(features.dtype, torch.float32)), dim=-1)
            pick = lambda idx: metric.gather(1, idx.unsqueeze(-1).expand(-1, -1, metric.shape[-1]))  # noqa: E731
            sim = pick(idx_a) @ pick(idx_b).transpose(-1, -2)  # (B, |A|, |B|)
            sim = sim.masked_fill(~(real_a.unsqueeze(2) & real_b.unsqueeze(1)), float("-inf"))
            best, partner = sim.max(-1)
            r = torch.minimum(remaining, real_a.sum(1)) * can_merge
            chosen = top_k_mask(best, real_a, r)  # (B, |A|)
            n = alive.shape[1]
            slot = torch.where(real_a, idx_a, n)  # padding entries write into a spare column
            spare = (alive.shape[0], n + 1)
            source = torch.zeros(spare, dtype=torch.bool, device=device).scatter(1, slot, chosen)[:, :n]
            destination = torch.zeros(spare, dtype=torch.long, device=device).scatter(1, slot, idx_b.gather(1, partner))[:, :n]
            # Merge the metric too, weighted like the tokens, so a later round compares merged tokens.
            features, _ = merge_into(features, sizes, source, destination)
            hidden, sizes = merge_into(hidden, sizes, source, destination)
            alive &= ~source
            remaining = remaining - source.sum(1)
        return Reduction(keep=alive, hidden=hidden, sizes=sizes, proportional_attention=self.proportional_attention)

    def __repr__(self) -> str:
        return f"BipartiteMerge(proportional_attention={self.proportional_attention})"
