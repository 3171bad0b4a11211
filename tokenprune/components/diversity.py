"""Max-min diversity selection (DivPrune): keep the tokens that are farthest apart.

Alvar et al., "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models",
CVPR 2025, arXiv:2503.02175 (Algorithm 1; written from the paper). The kept set should maximise
the smallest pairwise cosine distance ``1 - cos(u, v)`` (the max-min diversity problem, NP-hard);
the greedy solver starts from the most isolated token (largest distance to its nearest neighbour)
and then adds, one at a time, the token whose distance to the nearest already-kept token is largest.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..interfaces import Reducer, Reduction, ScoreContext
from .merge import cosine_similarity_matrix

__all__ = ["MaxMinDiversityDrop", "greedy_max_min"]


def greedy_max_min(distance: Tensor, k: int) -> Tensor:
    """Indices (ascending) of ``k`` items chosen greedily to maximise their minimum pairwise distance.

    Args:
        distance: ``(m, m)`` symmetric distances.
        k: items to choose (clamped to ``m``).

    The first pick is the item with the largest distance to its nearest other item; each later pick
    maximises the distance to its nearest chosen item (a running minimum; ties go to the first index).
    """
    m = distance.shape[0]
    k = min(k, m)
    if k <= 0:
        return torch.zeros(0, dtype=torch.long, device=distance.device)
    off_diagonal = distance.masked_fill(torch.eye(m, dtype=torch.bool, device=distance.device), float("inf"))
    first = int(off_diagonal.min(0).values.argmax()) if m > 1 else 0
    chosen = [first]
    nearest = distance[first].clone()
    taken = torch.zeros(m, dtype=torch.bool, device=distance.device)
    taken[first] = True
    for _ in range(k - 1):
        pick = int(nearest.masked_fill(taken, float("-inf")).argmax())
        chosen.append(pick)
        taken[pick] = True
        nearest = torch.minimum(nearest, distance[pick])
    return torch.sort(torch.tensor(chosen, device=distance.device)).values


class MaxMinDiversityDrop(Reducer):
    """Keep the ``n_keep`` candidates the greedy max-min solver picks on cosine distance; drop the rest.

    Scores are ignored (pair it with `NullScorer`). Distances use `ScoreContext.match_features`;
    kept tokens stay in their original order (the public DivPrune code sorts them too).
    """

    sites = frozenset({"encoder", "projector"})

    def reduce(self, ctx: ScoreContext, scores: Tensor, candidates: Tensor, n_keep: Tensor) -> Reduction:
        features = ctx.match_features().to(candidates.device)
        keep = torch.zeros_like(candidates)
        for b in range(candidates.shape[0]):
            slots = torch.nonzero(candidates[b], as_tuple=False)[:, 0]
            distance = 1.0 - cosine_similarity_matrix(features[b, slots].unsqueeze(0))[0]
            keep[b, slots[greedy_max_min(distance, int(n_keep[b]))]] = True
        return Reduction(keep=keep)

    def __repr__(self) -> str:
        return "MaxMinDiversityDrop()"
