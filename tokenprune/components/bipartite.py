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

from ..interfaces import Reducer, Reduction, ScoreContext
from .merge import cosine_similarity_matrix, merge_into
from .reducers import top_k_mask

__all__ = ["BipartiteMerge"]


class BipartiteMerge(Reducer):
    """ToMe's bipartite soft matching with size-weighted merging.

    Args:
        proportional_attention: add ``log(size)`` to later blocks' attention logits (ToMe uses it
            for supervised checkpoints, not for MAE ones).
    """

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
            set_a = alive & (rank % 2 == 0)
            set_b = alive & (rank % 2 == 1)
            can_merge = set_b.any(1)
            if not bool((can_merge & (remaining > 0)).any()):
                break  # a single candidate left: nothing to merge into
            sim = cosine_similarity_matrix(features)
            sim = sim.masked_fill(~(set_a.unsqueeze(2) & set_b.unsqueeze(1)), float("-inf"))
            best, destination = sim.max(-1)
            r = torch.minimum(remaining, set_a.sum(1)) * can_merge
            source = top_k_mask(best, set_a, r)
            # Merge the metric too, weighted like the tokens, so a later round compares merged tokens.
            features, _ = merge_into(features, sizes, source, destination)
            hidden, sizes = merge_into(hidden, sizes, source, destination)
            alive &= ~source
            remaining = remaining - source.sum(1)
        return Reduction(keep=alive, hidden=hidden, sizes=sizes, proportional_attention=self.proportional_attention)

    def __repr__(self) -> str:
        return f"BipartiteMerge(proportional_attention={self.proportional_attention})"
