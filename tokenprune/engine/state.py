"""Per-forward and per-generation state of the engine.

Nothing here lives in module globals or on model modules: a `ForwardState` belongs to the engine
for one forward pass; a `CacheRecord` is attached to the KV cache of one generation, so its
lifetime is the cache's (it survives beam reordering and cache copies).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..cost import stack_flops
from ..schedule import Schedule
from .masks import KeyColumns
from .plan import HostLayout

__all__ = ["Stage", "ForwardState", "CacheRecord", "DecodeState", "CallState", "CallStats", "call_stats", "RECORD_ATTR"]

RECORD_ATTR = "_tokenprune_record"
"""Attribute under which the engine stores a `CacheRecord` on a transformers ``Cache``."""


@dataclass
class Stage:
    """The token slots from decoder layer ``layer`` on.

    Attributes:
        layer: first decoder layer that sees these slots.
        idx: ``(B, n)`` original position of every slot, ascending per row.
        valid: ``(B, n)`` False for filler slots.
        visual: ``(B, n)`` real visual tokens.
        shift: ``(B,)`` for compact positions: original minus compact position of the last token.
        counts: visual tokens per sample, on the host (from the plan; ``None``: count ``visual``).
        all_valid: no filler slot, on the host (``None``: unknown).
        span: ``(start, stop)``: the host knows every row's visual slots are exactly these and no slot
            is padding, a filler or a visual query (`engine.plan.HostLayout.visual_span`); else ``None``.
    """

    layer: int
    idx: Tensor
    valid: Tensor
    visual: Tensor
    shift: Tensor | None = None
    counts: tuple[int, ...] | None = None
    all_valid: bool | None = None
    span: tuple[int, int] | None = None

    def visual_counts(self) -> list[int]:
        """Visual tokens per sample (host; a device read only for stages built without a plan)."""
        return list(self.counts) if self.counts is not None else self.visual.sum(1).tolist()

    @property
    def width(self) -> int:
        """Number of slots each sample holds in this stage (including filler)."""
        return self.idx.shape[1]


@dataclass
class ForwardState:
    """What one prefill (or training) forward knows about its tokens.

    Attributes:
        length: original sequence length ``L``.
        schedule: planned visual tokens per layer and sample.
        query: ``(B, Q)`` original positions of the query tokens (padding entries repeat a real one).
        query_weight: ``(B, Q)`` weight of each query row.
        stages: ``stages[0]`` is the full sequence; one more per reduction that removed tokens.
        layout: the token layout on the host (`engine.plan.read_layout`), read once.
        memo: sliced masks and rotary tables, computed once per stage and reused by its layers.
        record: where stages are published for decode (``None`` without a cache).
        capacity: ``max_cache_len`` of a static cache (``None``: a dynamic cache or none).
        n_keep: per reduction layer, the ``(B,)`` candidates each sample keeps, on the device, copied
            once in the VLM pre-hook (a host->device copy in a layer hook would wait for the queue too).
        last_query: inference: one query row per sample, weight 1, the last real token (host-known). With
            no filler slot and no mask the query is then the last slot and sees every slot, so the
            scoring step needs neither a visibility mask nor a weighted mean over query rows.
    """

    length: int
    schedule: Schedule
    query: Tensor
    query_weight: Tensor
    stages: list[Stage]
    layout: HostLayout | None = None
    memo: dict[Any, Any] = field(default_factory=dict)
    record: CacheRecord | None = None
    capacity: int | None = None
    last_query: bool = False
    n_keep: tuple[Tensor, ...] = ()

    @property
    def current(self) -> Stage:
        """The stage the forward is in now (the last one entered)."""
        return self.stages[-1]


@dataclass
class CacheRecord:
    """Per-stage index maps of a filled KV cache, used by every later decode step.

    Layers from ``stages[s].layer`` on cached only the slots of stage ``s``; a decode step slices
    the mask columns accordingly (and, for compact positions, shifts the new token's position).
    ``columns[s]`` are those columns, prepared on the device once per prefill (`masks.KeyColumns`),
    so a decode step queues a gather per stage and reads nothing back.
    """

    length: int
    stages: list[Stage]
    columns: dict[int, KeyColumns] = field(default_factory=dict)
    capacity: int | None = None
    _stage_table: tuple[int, dict[int, Stage | None]] | None = field(default=None, repr=False, compare=False)

    def stage_for(self, layer: int) -> Stage | None:
        """The last stage starting at or below `layer` (the slots that layer cached), or None if none does.

        Looked up at every decode step for every hooked layer, so the answer is kept per layer; a stage
        list that grew since (the prefill publishes stage after stage) starts the table afresh.
        """
        if torch.compiler.is_compiling():  # traced once per graph: no table to mutate (and guard on)
            return self._find_stage(layer)
        table = self._stage_table
        if table is None or table[0] != len(self.stages):
            table = self._stage_table = (len(self.stages), {})
        if layer not in table[1]:
            table[1][layer] = self._find_stage(layer)
        return table[1][layer]

    def _find_stage(self, layer: int) -> Stage | None:
        found = None
        for stage in self.stages:
            if stage.layer <= layer:
                found = stage
        return found


@dataclass
class DecodeState:
    """One decode (or continuation) forward over a cache that holds reduced layers.

    Attributes:
        record: what the prefill left on the cache.
        memo: per-stage slices of this step (masks, rotary rows), shared by the stage's layers.
        total: tokens in cache layer 0 once this step's layer 0 ran (read once per step, from shapes).
    """

    record: CacheRecord
    memo: dict[Any, Any] = field(default_factory=dict)
    total: int | None = None


@dataclass
class CallState:
    """Everything one thread's calls into a wrapped model keep between hooks.

    Kept per thread (the engine holds it in a ``threading.local``), so one wrapped model called
    from several threads gives each call its own state.

    Attributes:
        forward: the plan of the forward in progress (``None`` between calls or when idle).
        labels: labels captured by the head pre-hook for the VLM pre-hook (training query).
        final: ``(original length, last stage)`` of the last prefill that removed tokens (loss alignment).
        stages: the stages of the last prefill.
        summarise: computes ``stats`` from ``stages`` on first read (set by each prefill).
    """

    forward: ForwardState | DecodeState | None = None
    labels: Tensor | None = None
    final: tuple[int, Stage] | None = None
    stages: list[Stage] = field(default_factory=list)
    summarise: Callable[[], CallStats] | None = None
    _stats: CallStats | None = None

    def record(self, stages: list[Stage], summarise: Callable[[list[Stage]], CallStats]) -> None:
        """Keep a finished prefill's stages; its statistics are computed when first read, not in the forward."""
        self.stages, self._stats = stages, None
        self.summarise = lambda: summarise(stages)

    @property
    def has_stats(self) -> bool:
        """Whether a prefill has run in this call state."""
        return self._stats is not None or self.summarise is not None

    @property
    def stats(self) -> CallStats | None:
        """What the last prefill did (computed once, on first read: the cost model is not per-forward work)."""
        if self._stats is None and self.summarise is not None:
            self._stats, self.summarise = self.summarise(), None
        return self._stats


@dataclass(frozen=True)
class CallStats:
    """What the last prefill (or training) forward did.

    Attributes:
        visual_tokens: ``[layer][sample]`` visual tokens each decoder layer processed.
        num_visual: visual tokens of each sample at the input.
        dense_flops: per sample, paper-convention prefill FLOPs of the visual tokens without reduction
            (``sum over layers of 4nd^2 + 2n^2d + 3ndm``).
        flops: the same with the reduction applied.
        sequence_lengths: ``[layer]`` slots (batch width, incl. text and fillers) each layer ran on.
    """

    visual_tokens: list[list[int]]
    num_visual: list[int]
    dense_flops: list[float]
    flops: list[float]
    sequence_lengths: list[int]

    @property
    def flops_saved(self) -> float:
        """Fraction of the dense visual-token FLOPs saved over the batch (0 when there is nothing to save)."""
        dense = sum(self.dense_flops)
        return 1.0 - sum(self.flops) / dense if dense else 0.0

    @property
    def average_visual_tokens(self) -> list[float]:
        """Mean visual tokens per layer, per sample."""
        layers = len(self.visual_tokens)
        return [sum(col) / layers for col in zip(*self.visual_tokens)] if layers else []


def last_true(mask: Tensor) -> Tensor:
    """``(B,)`` index of the last True of each row (0 for an all-False row)."""
    # The running count of Trues peaks first at the last True; argmax returns the first maximum
    # (documented), and 0 for an all-False row. Three kernels instead of a masked max over positions.
    return mask.long().cumsum(1).argmax(dim=1)


def call_stats(stages: list[Stage], num_layers: int, text_config: Any) -> CallStats:
    """Summarise one forward's stages: visual tokens and slots per layer, paper-convention FLOPs."""
    counts = {stage.layer: (stage.visual_counts(), stage.width) for stage in stages}
    per_layer: list[list[int]] = []
    widths: list[int] = []
    current = counts[0]
    for layer in range(num_layers):
        current = counts.get(layer, current)
        per_layer.append(list(current[0]))
        widths.append(current[1])
    d, m = int(text_config.hidden_size), int(text_config.intermediate_size)
    num_visual = list(per_layer[0]) if per_layer else []
    dense = [stack_flops([n] * num_layers, d, m) for n in num_visual]
    pruned = [stack_flops(col, d, m) for col in zip(*per_layer)]
    return CallStats(per_layer, num_visual, dense, pruned, widths)
