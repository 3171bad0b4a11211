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
from typing import ClassVar, Literal

import torch
from torch import Tensor

from .config import StrategyConfig
from .schedule import Schedule

__all__ = [
    "Scheduler",
    "Scorer",
    "Reducer",
    "Strategy",
    "ScoreContext",
    "Reduction",
    "Positions",
    "Site",
    "LayerChoice",
    "check_sites",
    "ALL_SITES",
    "require_site",
]

Positions = Literal["keep", "compact"]
"""How kept tokens are positioned: ``"keep"`` their original positions, ``"compact"`` renumbered consecutively."""
Site = Literal["llm", "encoder", "projector"]
"""Where a component can act: ``"llm"`` between the LLM's decoder layers, ``"encoder"`` between a
vision encoder's blocks, ``"projector"`` on the features a VLM's vision tower hands to its projector."""
ALL_SITES: frozenset[str] = frozenset({"llm", "encoder", "projector"})
"""Every site: what components that read only hidden states, scores or positions declare."""
LayerChoice = Literal["current", "previous"]
"""Which decoder layer a `ScoreContext` computes with: the reduction layer itself (the first layer that
sees fewer tokens; PyramidDrop's convention) or the layer just below it, on the same slots (FastV's,
SparseVLM's and DART's convention: "the attention of layer K-1 decides what layer K sees")."""


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
        stage: which reduction of the strategy this is (0 for the first reduction layer).
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
    _rows: Callable[[Tensor, Tensor, LayerChoice], Tensor] | None = field(repr=False, default=None)
    _keys: Callable[[LayerChoice], Tensor] | None = field(repr=False, default=None)
    stage: int = 0
    """0-based index of this reduction among the strategy's reduction layers."""
    grid: tuple[int, int, int] | None = None
    """``(frames, rows, cols)`` of the candidate tokens in raster order, when the engine knows it (Qwen-VL's
    merged token grid of one image); ``None``: spatial reducers read the candidates as a square grid."""
    visual_counts: tuple[int, ...] | None = None
    """Visual tokens each sample holds now, on the host (the LLM engine's plan); ``None`` when not known.
    Lets a component that needs counts avoid reading ``visual`` back from the device."""
    keep_counts: tuple[int, ...] | None = None
    """Candidates each sample keeps here (the ``n_keep`` the reducer gets), on the host when the engine
    planned them; ``None`` when not known. Lets a reducer choose with host-sized slices (no rank pass)."""

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

    def attention_from(self, rows: Tensor, weight: Tensor, *, layer: LayerChoice = "current") -> Tensor:
        """``(B, n)`` weighted mean attention that the slots ``rows`` pay to every slot.

        Args:
            rows: ``(B, R)`` slot indices of the rating rows (e.g. SparseVLM's text raters).
            weight: ``(B, R)`` weight of each row (0 for padding entries; a sample's weights usually
                sum to 1).
            layer: ``"current"`` computes with the reduction layer, ``"previous"`` with the layer just
                below it (same slots, that layer's own input).

        Each row sees what it would see in the model (causal, padding, the layer's own mask); softmax
        in at least float32, mean over heads, exactly like `attention`.
        """
        if self._rows is None:
            raise NotImplementedError("This ScoreContext was built without an attention provider.")
        return self._rows(rows, weight, layer)

    def attention_received(self, *, layer: LayerChoice = "current") -> Tensor:
        """``(B, n)`` attention each slot receives, averaged over every real token of its sample.

        FastV's paper definition ("the average attention score one token received from all other
        tokens"). Under the causal mask token ``j`` is seen only by rows ``i >= j``; the mean is over
        all real rows of the sample all the same (a row that cannot see ``j`` contributes 0).
        Costs one ``(B, H, n, n)`` attention matrix of the chosen layer; computed once per layer.
        """
        key = f"received:{layer}"
        if key not in self._cache:
            batch, n = self.valid.shape
            rows = torch.arange(n, device=self.valid.device).expand(batch, -1)
            weight = self.valid.to(torch.float32) / self.valid.sum(1, keepdim=True).clamp(min=1)
            self._cache[key] = self.attention_from(rows, weight, layer=layer)
        return self._cache[key]

    def keys(self, *, layer: LayerChoice = "current") -> Tensor:
        """``(B, n, H * head_dim)`` post-rotary attention keys of every slot (KV heads repeated for GQA).

        Computed with the chosen layer's own input norm, key projection and rotary embedding.
        """
        if self._keys is None:
            raise NotImplementedError("This ScoreContext was built without a key provider.")
        key = f"keys:{layer}"
        if key not in self._cache:
            self._cache[key] = self._keys(layer)
        return self._cache[key]


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

    ``sites`` says where the component can act (see `Site`); a `Strategy` needs one site that all
    three of its components share, and runs there.

    Schedulers are pure: the same arguments give the same schedule. Reduction layers depend only
    on the depth of the model (so they are resolved once, at wrap time); counts depend on each
    sample's number of visual tokens (so they are resolved per forward).
    """

    sites: ClassVar[frozenset[str]] = frozenset({"llm"})

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
    """Decides which tokens matter.

    ``sites`` says where the scorer can run: an ``"llm"`` scorer reads what only a decoder layer
    has (the instruction's text rows, rotary keys); an ``"encoder"`` or ``"projector"`` scorer reads
    vision-tower internals ([CLS] attention of a tower block). The default is ``{"llm"}``: a
    third-party component declares the other sites it supports.
    """

    sites: ClassVar[frozenset[str]] = frozenset({"llm"})

    @abstractmethod
    def score(self, ctx: ScoreContext) -> Tensor:
        """``(B, n)`` importance of every slot; higher means keep. Only candidate slots are read."""


class Reducer(ABC):
    """Decides what happens to the tokens that are not kept.

    ``sites`` as for `Scorer` (default ``{"llm"}``).
    """

    sites: ClassVar[frozenset[str]] = frozenset({"llm"})
    exact_count: ClassVar[bool] = False
    """True when `reduce` keeps exactly ``min(n_keep[b], candidates of row b)`` tokens of every sample.

    The engine then knows every width on the host before the layer runs and never reads the
    selection back: the forward stays free of device->host syncs (the GPU queue never drains) and
    traceable by ``torch.compile``. A reducer that decides counts itself leaves it False, and the
    engine reads the kept counts once per boundary.
    """

    @abstractmethod
    def reduce(self, ctx: ScoreContext, scores: Tensor, candidates: Tensor, n_keep: Tensor) -> Reduction:
        """Choose ``n_keep[b]`` of the ``candidates[b]`` slots of every sample.

        Args:
            ctx: the reduction layer's context.
            scores: ``(B, n)`` from the `Scorer`.
            candidates: ``(B, n)`` slots that may be removed (real visual tokens that are not queries).
            n_keep: ``(B,)`` how many candidates each sample keeps.
        """

    def keep_columns(self, ctx: ScoreContext, scores: Tensor, k: int) -> Tensor | None:
        """Optional fast path: ``(B, k)`` ascending columns of ``scores`` to keep, every column a candidate.

        The LLM engine asks for it when the host knows that every row's candidates are the same
        contiguous span of slots and that every row keeps ``k`` of them (a single image, or a batch of
        identical layouts, without padding): ``scores`` is then that span only. Answering it lets the
        engine build the next stage's slots from the chosen columns directly: no keep mask, no
        protected-slot merge, no slot sort (about a third of a boundary's operations). It must choose
        exactly the candidates `reduce` would, and only a reducer that keeps rows as they are may
        answer (one that merges, sizes or asks for proportional attention returns ``None``). ``None``
        (the default) makes the engine call `reduce`. Only an `exact_count` reducer is asked, only in
        eager mode.
        """
        return None


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

    def __post_init__(self) -> None:
        check_sites(self.scheduler, self.scorer, self.reducer)

    @property
    def sites(self) -> frozenset[str]:
        """The sites all three components support: where this strategy can run.

        `tokenprune.wrap` runs a strategy in the LLM when ``"llm"`` is among them, else in the
        vision encoder (ToMe on a VLM reduces inside its vision tower).
        """
        return check_sites(self.scheduler, self.scorer, self.reducer)


def _site_names(sites) -> str:
    return ", ".join(repr(s) for s in sorted(sites)) or "none"


def check_sites(*components: Scheduler | Scorer | Reducer) -> frozenset[str]:
    """The sites every one of ``components`` supports; `IncompatibleComponentsError` when none.

    Raises:
        IncompatibleComponentsError: no site is shared (the message lists each component's sites).
    """
    from .errors import IncompatibleComponentsError

    shared = frozenset(ALL_SITES)
    for obj in components:
        shared &= frozenset(obj.sites)
    if not shared:
        detail = "; ".join(f"{type(obj).__name__} acts at {_site_names(obj.sites)}" for obj in components)
        raise IncompatibleComponentsError(
            f"These components share no site: {detail}. 'llm' components read decoder layers (text rows, rotary "
            "keys), 'encoder' ones a vision tower's blocks, 'projector' ones the tower's output features; pick "
            "components with a site in common (`tokenprune list` shows each component's sites)."
        )
    return shared


def require_site(sites: frozenset[str], site: str, what: str, where: str) -> None:
    """Raise `IncompatibleComponentsError` unless ``site`` is among ``sites`` (``what`` runs ``where``)."""
    from .errors import IncompatibleComponentsError

    if site not in sites:
        raise IncompatibleComponentsError(
            f"{what} cannot run {where}: its components act at {_site_names(sites)}, not {site!r}. "
            "`tokenprune list` shows each strategy's and component's sites."
        )
