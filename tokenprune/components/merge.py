"""Merging reducers: removed tokens are folded into kept ones instead of being thrown away.

Every slot carries a *size*, the number of original tokens it stands for (1 at the input). When
token ``a`` merges into ``b``, ``b`` becomes the size-weighted mean ``(s_a x_a + s_b x_b) / (s_a + s_b)``
and its size ``s_a + s_b``, so the sum of sizes over a sample always equals its original token count.
With ``proportional_attention`` the engine adds ``log(size)`` to every later block's attention
logits, so a merged key counts as the tokens it holds (Bolya et al., "Token Merging: Your ViT but
Faster", ICLR 2023, arXiv:2210.09461, Sec. 3; written from the paper).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from ..interfaces import ALL_SITES, Reducer, Reduction, ScoreContext
from .top_k import top_k_mask

__all__ = ["SimilarityMerge", "merge_into", "cosine_similarity_matrix"]


def cosine_similarity_matrix(features: Tensor) -> Tensor:
    """``(B, n, n)`` cosine similarity between every pair of slots (computed in at least float32)."""
    f = F.normalize(features.to(torch.promote_types(features.dtype, torch.float32)), dim=-1)
    return f @ f.transpose(-1, -2)


def merge_into(hidden: Tensor, sizes: Tensor, source: Tensor, destination: Tensor) -> tuple[Tensor, Tensor]:
    """Size-weighted merge of every ``source`` slot into slot ``destination[b, i]``.

    Args:
        hidden: ``(B, n, d)`` features.
        sizes: ``(B, n)`` tokens each slot stands for.
        source: ``(B, n)`` slots that merge away.
        destination: ``(B, n)`` target slot of each source slot (ignored elsewhere).

    Returns:
        ``(hidden, sizes)`` with every destination replaced by the weighted mean of itself and its
        sources and carrying their summed size. Source rows keep their old values (the caller drops them).
    """
    weight = sizes.to(hidden.dtype) * source.to(hidden.dtype)
    target = torch.where(source, destination, torch.arange(hidden.shape[1], device=hidden.device))
    moved_sizes = torch.zeros_like(sizes).scatter_add(1, target, sizes * source.to(sizes.dtype))
    moved = torch.zeros_like(hidden).scatter_add(1, target.unsqueeze(-1).expand_as(hidden), hidden * weight.unsqueeze(-1))
    stay = ~source
    new_sizes = torch.where(stay, sizes + moved_sizes, sizes)
    total = (hidden * sizes.to(hidden.dtype).unsqueeze(-1) + moved) / new_sizes.to(hidden.dtype).unsqueeze(-1)
    has_sources = (moved_sizes > 0).unsqueeze(-1)
    new_hidden = torch.where(stay.unsqueeze(-1) & has_sources, total, hidden)
    return new_hidden, new_sizes


class SimilarityMerge(Reducer):
    """Keep the top-k candidates by score; merge every other candidate into its most similar kept one.

    Similarity is the cosine of `ScoreContext.match_features` (inside a vision encoder: the block's
    head-mean keys, ToMe's metric; in an LLM: the hidden states). Destinations are kept candidates
    only, so prefix and text tokens never absorb anything. A sample that keeps no candidate drops
    its removed ones (nothing to merge into).

    Args:
        proportional_attention: add ``log(size)`` to later blocks' attention logits (ToMe's
            proportional attention; the encoder engine applies it through the blocks' attention mask).
    """

    sites = ALL_SITES

    def __init__(self, proportional_attention: bool = False):
        self.proportional_attention = proportional_attention

    def reduce(self, ctx: ScoreContext, scores: Tensor, candidates: Tensor, n_keep: Tensor) -> Reduction:
        keep = top_k_mask(scores, candidates, n_keep)
        removed = candidates & ~keep
        sim = cosine_similarity_matrix(ctx.match_features()).to(keep.device)
        sim = sim.masked_fill(~keep.unsqueeze(1), float("-inf"))
        destination = sim.argmax(-1)  # first maximum on ties: per row, independent of the batch
        source = removed & keep.any(1, keepdim=True)
        sizes = ctx.sizes if ctx.sizes is not None else torch.ones(keep.shape, dtype=ctx.hidden.dtype, device=keep.device)
        hidden, sizes = merge_into(ctx.hidden, sizes.to(ctx.hidden.dtype), source, destination)
        return Reduction(keep=keep, hidden=hidden, sizes=sizes, proportional_attention=self.proportional_attention)

    def __repr__(self) -> str:
        return f"SimilarityMerge(proportional_attention={self.proportional_attention})"
