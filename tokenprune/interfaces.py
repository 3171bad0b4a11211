"""The three abstractions a strategy is made of, and the objects passed between them.

A strategy answers three questions, each answered by one small object:

* `Scheduler`: *where* in the stack tokens leave and *how many* each sample keeps (a `Schedule`);
* `Scorer`: *which* tokens matter (one score per token slot);
* `Reducer`: *what happens* to the others (dropped, merged, ...).

The engine owns everything model-specific (masks, positions, caches, padding); the three objects
only see tensors through a `ScoreContext`, so the same strategy runs on every supported model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from .config import StrategyConfig
from .schedule import Schedule

__all__ = ["Scheduler", "Scorer", "Reducer", "Strategy", "ScoreContext", "Reduction", "Positions"]

Positions = Literal["keep", "compact"]
"""How kept tokens are positioned: ``"keep"`` their original positions, ``"compact"`` renumbered consecutively."""


@dataclass
class ScoreContext:
    """What a `Scorer` and a `Reducer` may look at, at one reduction layer.

    Shapes use ``B`` = batch and ``n`` = token slots currently in the sequence (text, visual and
    filler slots; fillers pad shorter rows of a ragged batch and are never candidates).

    Attributes:
        layer_index: the decoder layer about to run on the reduced sequence.
        layer: that decoder layer module.
        hidden: ``(B, n, d)`` input hidden states of the layer.
        positions: ``(B, n)`` original sequence position of every slot.
        valid: ``(B, n)`` True for real tokens, False for padding and fillers.
        visual: ``(B, n)`` True for real visual tokens.
        query: ``(B, Q)`` slot index of each query token (the last instruction token(s)).
        query_weight: ``(B, Q)`` weight of each query row (0 for padding entries; rows sum to 1
            where a sample has queries, to 0 where it has none).
    """

    layer_index: int
    layer: torch.nn.Module
    hidden: Tensor
    positions: Tensor
    valid: Tensor
    visual: Tensor
    query: Tensor
    query_weight: Tensor
    _attention: Callable[[], Tensor] = field(repr=False, default=None)  # type: ignore[assignment]
    _cache: dict[str, Tensor] = field(repr=False, default_factory=dict)
    sizes: Tensor | None = None
    """``(B, n)`` how many original tokens each slot stands for (merging reducers); ``None`` = all 1."""

    def attention(self) -> Tensor:
        """``(B, n)`` attention the query token(s) pay to every slot.

        Recomputed from this layer's own input norm, query/key projections and rotary embedding,
        softmax in (at least) float32 over the keys the query may see, mean over heads, weighted
        mean over query rows. No attention maps are needed, so it works under SDPA, eager and flash.
        Computed once per context.
        """
        if "attention" not in self._cache:
            self._cache["attention"] = self._attention()
        return self._cache["attention"]

    def match_features(self) -> Tensor:
        """``(B, n, f)`` features whose cosine similarity decides which tokens merge.

        The hidden states here; an encoder context returns the block's head-mean keys (ToMe's metric).
        """
        return self.hidden


@dataclass
class Reduction:
    """What a `Reducer` decided.

    Attributes:
        keep: ``(B, n)`` True for the candidate slots that stay. The engine adds the protected slots
            (text, queries) itself.
        hidden: optional ``(B, n, d)`` replacement hidden states (merging reducers write the merged
            features here); ``None`` keeps the input hidden states.
        sizes: optional ``(B, n)`` tokens each slot stands for after merging (kept slots carry the
            sizes of what merged into them). Read by the encoder engine; ``None`` leaves sizes unchanged.
        proportional_attention: ask the engine to add ``log(size)`` to the attention logits of every
            later block (ToMe's proportional attention), so a merged token weighs as the tokens it holds.
    """

    keep: Tensor
    hidden: Tensor | None = None
    sizes: Tensor | None = None
    proportional_attention: bool = False


class Scheduler(ABC):
    """Decides where tokens leave the stack and how many each sample keeps.

    Schedulers are pure: the same arguments give the same schedule. Reduction layers depend only
    on the depth of the model (so they are resolved once, at wrap time); counts depend on each
    sample's number of visual tokens (so they are resolved per forward).
    """

    @abstractmethod
    def resolve_layers(self, num_layers: int) -> tuple[int, ...]:
        """0-based index of the first layer of each reduced stage, for a stack of ``num_layers``."""

    @abstractmethod
    def keep_counts(self, num_visual: int, num_layers: int) -> tuple[int, ...]:
        """Visual tokens one sample keeps from each reduction layer on (non-increasing)."""

    def plan(self, num_layers: int, num_visual: Sequence[int]) -> Schedule:
        """The concrete `Schedule` for a batch whose samples hold ``num_visual`` visual tokens."""
        layers = self.resolve_layers(num_layers)
        per_sample = [self.keep_counts(int(n), num_layers) for n in num_visual]
        keep = tuple(tuple(row[s] for row in per_sample) for s in range(len(layers)))
        return Schedule(num_layers, layers, tuple(int(n) for n in num_visual), keep)


class Scorer(ABC):
    """Decides which tokens matter."""

    @abstractmethod
    def score(self, ctx: ScoreContext) -> Tensor:
        """``(B, n)`` importance of every slot; higher means keep. Only candidate slots are read."""


class Reducer(ABC):
    """Decides what happens to the tokens that are not kept."""

    @abstractmethod
    def reduce(self, ctx: ScoreContext, scores: Tensor, candidates: Tensor, n_keep: Tensor) -> Reduction:
        """Choose ``n_keep[b]`` of the ``candidates[b]`` slots of every sample.

        Args:
            ctx: the reduction layer's context.
            scores: ``(B, n)`` from the `Scorer`.
            candidates: ``(B, n)`` slots that may be removed (real visual tokens that are not queries).
            n_keep: ``(B,)`` how many candidates each sample keeps.
        """


@dataclass(frozen=True)
class Strategy:
    """A token-reduction strategy: a Scheduler, a Scorer and a Reducer, plus how positions behave.

    Attributes:
        scheduler: where and how many.
        scorer: which tokens matter.
        reducer: what happens to the rest.
        positions: ``"keep"`` (default): every kept token keeps its original rotary position;
            ``"compact"``: positions are renumbered 0..n-1 after every reduction, as the official
            PyramidDrop code does (1-D RoPE models only).
        name: registry name, for messages and stats.
        config: the validated configuration the strategy was built from, if any.
    """

    scheduler: Scheduler
    scorer: Scorer
    reducer: Reducer
    positions: Positions = "keep"
    name: str = "custom"
    config: StrategyConfig | None = None
