"""Duplication-aware selection: pivot tokens plus the tokens least similar to them (DART)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from ..interfaces import Reducer, Reduction, ScoreContext
from .attention_scorers import text_tail

__all__ = ["PivotDedupDrop"]


class PivotDedupDrop(Reducer):
    """Keep pivot tokens, then, pivot by pivot, the candidates least similar to it (DART, arXiv 2502.11494).

    Pivots are the ``image_pivots`` visual candidates and the ``text_pivots`` text tokens after the
    image with the highest score (DART scores by the L1 norm of the keys, see `KeyNormScorer`). Image
    pivots are kept. The rest of the budget is split evenly over all pivots (the first pivots take the
    remainder); each pivot in turn claims its quota of the remaining candidates with the lowest cosine
    similarity of hidden states to it, so the pivots claim disjoint sets. Ties resolve to the earlier
    slot. Exactly ``n_keep`` candidates are kept (the reference code keeps 4 more than its budget).

    Args:
        image_pivots: visual pivots per sample (DART: 4).
        text_pivots: text pivots per sample (DART: 4); fewer when the text is shorter.
    """

    def __init__(self, image_pivots: int = 4, text_pivots: int = 4):
        self.image_pivots = int(image_pivots)
        self.text_pivots = int(text_pivots)

    def reduce(self, ctx: ScoreContext, scores: Tensor, candidates: Tensor, n_keep: Tensor) -> Reduction:
        hidden = ctx.hidden.to(torch.promote_types(ctx.hidden.dtype, torch.float32))
        unit = F.normalize(hidden, dim=-1)
        tail = text_tail(ctx)
        keep = torch.zeros_like(candidates)
        for b in range(candidates.shape[0]):
            cand = candidates[b].nonzero().squeeze(1)
            k = min(int(n_keep[b]), len(cand))
            if k == 0:
                continue
            by_score = cand[torch.sort(scores[b, cand], descending=True, stable=True).indices]
            image = by_score[: min(self.image_pivots, k)]
            text_slots = tail[b].nonzero().squeeze(1)
            text = text_slots[torch.sort(scores[b, text_slots], descending=True, stable=True).indices][: self.text_pivots]
            keep[b, image] = True
            remaining = torch.ones(len(cand), dtype=torch.bool, device=cand.device)
            remaining &= ~keep[b, cand]
            budget = k - len(image)
            pivots = torch.cat([image, text])
            if budget <= 0 or len(pivots) == 0:
                continue
            quota = [budget // len(pivots) + (1 if i < budget % len(pivots) else 0) for i in range(len(pivots))]
            similarity = unit[b, pivots] @ unit[b, cand].T  # (P, N)
            for p, q in enumerate(quota):
                if q == 0:
                    continue
                sim = similarity[p].masked_fill(~remaining, float("inf"))
                chosen = torch.sort(sim, stable=True).indices[:q]
                chosen = chosen[remaining[chosen]]
                remaining[chosen] = False
                keep[b, cand[chosen]] = True
        return Reduction(keep=keep)

    def __repr__(self) -> str:
        return f"PivotDedupDrop(image_pivots={self.image_pivots}, text_pivots={self.text_pivots})"
