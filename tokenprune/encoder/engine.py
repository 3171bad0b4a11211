"""The encoder runtime: reduces a vision transformer's tokens between blocks with forward pre-hooks.

* A pre-hook on block 0 starts a forward: every slot stands for one token (size 1).
* A pre-hook on each reduction block scores the slots with that block's own norm and q/k
  projections (`EncoderContext`), lets the strategy's Reducer choose (and merge), and hands the
  block the surviving hidden states, in their original order. Prefix tokens ([CLS], registers)
  are never candidates.
* When a reducer asked for proportional attention, every later block also gets an additive
  ``log(size)`` key bias through its own attention-mask argument.

Every sample of an encoder batch holds one image of the same size, so every sample keeps the same
number of slots and the batch stays rectangular (no fillers). No forward is copied, no module is
replaced; hooks are removable and state_dict keys never change.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..cost import stack_flops
from ..errors import UnsupportedFeatureError
from ..interfaces import Strategy
from ..schedule import Schedule
from .context import EncoderContext
from ..engine.selection import select
from ..engine.state import Stage
from ..engine.hooks import HookOwner

__all__ = ["EncoderEngine", "EncoderStats", "EncoderState"]


@dataclass(frozen=True)
class EncoderStats:
    """What the last forward through the wrapped encoder did.

    Attributes:
        visual_tokens: ``[block][sample]`` patch tokens (prefix tokens excluded) each block processed.
        num_visual: patch tokens of each sample at the input.
        sequence_lengths: ``[block]`` slots (incl. prefix tokens) each block ran on.
        dense_flops: per sample, ``sum over blocks of 4nd^2 + 2n^2d + 3ndm`` without reduction
            (the same convention as the LLM side; a ViT MLP is ``2ndm``, so this slightly overstates).
        flops: the same with the reduction applied.
    """

    visual_tokens: list[list[int]]
    num_visual: list[int]
    sequence_lengths: list[int]
    dense_flops: list[float]
    flops: list[float]

    @property
    def flops_saved(self) -> float:
        """Share of the dense blocks' FLOPs this call did not spend (0 when nothing was removed)."""
        dense = sum(self.dense_flops)
        return 1.0 - sum(self.flops) / dense if dense else 0.0


@dataclass
class EncoderState:
    """One forward through the encoder.

    Attributes:
        schedule: planned patch tokens per block and sample.
        positions: ``(B, n)`` original index of every current slot.
        sizes: ``(B, n)`` tokens each slot stands for (``None`` until something merged).
        proportional: whether later blocks add ``log(size)`` to their attention logits.
        widths: slots each block ran on.
        stages: one `Stage` per reduction that removed tokens (stage 0: the full sequence).
        snapshots: per block, the state when the block was first reached.
    """

    schedule: Schedule
    positions: Tensor
    sizes: Tensor | None = None
    proportional: bool = False
    widths: dict[int, int] = field(default_factory=dict)
    stages: list[Stage] = field(default_factory=list)
    snapshots: dict[int, Snapshot] = field(default_factory=dict)


@dataclass
class Snapshot:
    """What the state was when block ``i`` was first reached (for a recomputation in backward)."""

    num_stages: int
    sizes: Tensor | None
    proportional: bool

    def replay(self, state: EncoderState) -> EncoderState:
        """A throwaway copy of ``state`` as it was then."""
        return EncoderState(
            schedule=state.schedule,
            positions=state.stages[self.num_stages - 1].idx,
            sizes=self.sizes,
            proportional=self.proportional,
            stages=list(state.stages[: self.num_stages]),
        )


def _in_backward() -> bool:
    """True while the autograd engine runs a backward pass (checkpointed blocks are recomputed then)."""
    current = getattr(torch._C, "_current_graph_task_id", None)
    return current is not None and current() != -1


class EncoderEngine(HookOwner):
    """Installs and runs the block hooks of one wrapped vision encoder.

    Args:
        model: the wrapped encoder.
        adapter: the encoder adapter that located its blocks.
        strategy: what to do (its scheduler's layers are block indices; counts are patch tokens).
        depth: the blocks whose output is used, when fewer than the encoder has (a VLM reads the
            output of block ``depth - 1``, e.g. LLaVA-1.5's penultimate layer): the schedule is
            resolved for ``depth`` blocks, and later blocks run on what is left. ``None``: all blocks.
    """

    def __init__(self, model: nn.Module, adapter: Any, strategy: Strategy, depth: int | None = None):
        self.model = model
        self.adapter = adapter
        self.strategy = strategy
        self.stack = adapter.locate(model)
        self.depth = self.stack.num_layers if depth is None else int(depth)
        self.layers = strategy.scheduler.resolve_layers(self.depth)
        super().__init__()
        self._latest: EncoderState | None = None

    # -- installation -------------------------------------------------------------------------
    def install(self) -> None:
        """Attach the block hooks; on failure remove what was attached."""
        try:
            first = self.layers[0] if self.layers else self.stack.num_layers
            for i, block in enumerate(self.stack.blocks):
                if i == 0 or i >= first:
                    hook = functools.partial(self._on_block, i)
                    self._handles.append(block.register_forward_pre_hook(hook, with_kwargs=True))
        except Exception:
            self.remove()
            raise

    def remove(self) -> None:
        """Detach every block hook (idempotent)."""
        self._detach_hooks()

    # -- what the handle reads ----------------------------------------------------------------
    @property
    def _state(self) -> EncoderState | None:
        return getattr(self._local, "state", None)

    @property
    def stats(self) -> EncoderStats | None:
        """Tokens and FLOPs per block of the current (or else the last completed) forward."""
        state = self._state or self._latest
        return None if state is None else self._stats(state)

    @property
    def stages(self) -> list[Stage]:
        """Stages (surviving slots from each reduction block on) of the current or last forward."""
        state = self._state or self._latest
        return [] if state is None else list(state.stages)

    @property
    def final(self) -> tuple[int, Stage] | None:
        """``(original length, last stage)`` of the last forward, if it removed tokens."""
        state = self._state or self._latest
        if state is None or len(state.stages) < 2:
            return None
        return state.stages[0].width, state.stages[-1]

    def sizes(self) -> Tensor | None:
        """``(B, n)`` tokens each output slot stands for after the last forward (``None``: all 1)."""
        state = self._state or self._latest
        return None if state is None else state.sizes

    def key_bias(self) -> Tensor | None:
        """``(B, n)`` log-size bias of the current forward's slots when proportional attention is on."""
        state = self._state or self._latest
        if state is None or not state.proportional or state.sizes is None:
            return None
        return torch.log(state.sizes)

    # -- hooks --------------------------------------------------------------------------------
    def _on_block(self, index: int, block: nn.Module, args: tuple, kwargs: dict):
        hidden = self.adapter.hidden_of(block, args, kwargs)
        if _in_backward():
            # Activation checkpointing that wraps whole blocks (timm, open_clip) re-runs the block, and so
            # this hook, during backward: redo this block's step from the state it saw the first time,
            # without touching the forward's state (same input, so the same selection and merge).
            state = self._state
            snapshot = state.snapshots.get(index) if state is not None else None
            if snapshot is None:
                return None
            state = snapshot.replay(state)
        else:
            if index == 0:
                self._start(hidden)
            state = self._state
            if state is None:
                return None
            state.snapshots[index] = Snapshot(len(state.stages), state.sizes, state.proportional)
        changed = False
        if index in self.layers:
            reduced = self._reduce(index, block, state, hidden)
            if reduced is not None:
                hidden, changed = reduced, True
        state.widths[index] = hidden.shape[1]
        shrunk = len(state.stages) > 1
        if not (changed or shrunk or state.proportional):
            return None  # nothing removed or merged yet: the block runs untouched (bitwise identity)
        if shrunk and self.adapter.mask_of(block, args, kwargs) is not None:
            raise UnsupportedFeatureError(
                f"Block {index} was called with an attention mask of the full sequence, which no longer matches "
                "the reduced tokens. Call the encoder without an attention mask."
            )
        if shrunk and hidden.shape[1] != state.stages[-1].width:
            raise RuntimeError(
                f"Block {index} received {hidden.shape[1]} tokens but tokenprune expected {state.stages[-1].width}; "
                "another hook or wrapper changed the sequence length."
            )
        bias = torch.log(state.sizes) if state.proportional and state.sizes is not None else None
        return self.adapter.with_inputs(block, args, kwargs, hidden, bias)

    def _start(self, hidden: Tensor) -> None:
        batch, n = hidden.shape[:2]
        prefix = self.stack.num_prefix
        if n <= prefix:
            raise ValueError(f"The encoder sequence has {n} tokens, no more than its {prefix} prefix tokens.")
        schedule = self.strategy.scheduler.plan(self.depth, [n - prefix] * batch)
        positions = torch.arange(n, device=hidden.device).expand(batch, -1)
        ones = torch.ones(batch, n, dtype=torch.bool, device=hidden.device)
        visual = ones.clone()
        visual[:, :prefix] = False
        state = EncoderState(schedule=schedule, positions=positions)
        state.stages.append(Stage(layer=0, idx=positions, valid=ones, visual=visual))
        self._local.state = state
        self._latest = state

    def _reduce(self, index: int, block: nn.Module, state: EncoderState, hidden: Tensor) -> Tensor | None:
        prev = state.stages[-1]
        step = self.layers.index(index)
        target = torch.tensor(state.schedule.keep[step], device=hidden.device)
        current = prev.visual.sum(1)
        if bool((current <= target).all()):
            return None
        batch, n = hidden.shape[:2]
        prefix = self.stack.num_prefix
        candidates = prev.visual.to(hidden.device)
        sizes = state.sizes
        bias = torch.log(sizes) if state.proportional and sizes is not None else None
        ctx = EncoderContext.at_block(
            self.adapter, block, index, hidden, positions=prev.idx, valid=prev.valid, visual=prev.visual,
            num_prefix=prefix, sizes=sizes, key_bias=bias,
        )  # fmt: skip
        chosen = select(
            ctx, self.strategy.scorer, self.strategy.reducer, candidates, target, protected=~candidates,
            miscount=lambda counts: (
                f"The reducer kept {counts} tokens per sample at block {index}; an encoder batch must stay "
                "rectangular (every image keeps the same number of tokens)."
            ),
        )  # fmt: skip
        reduction, sel = chosen.reduction, chosen.index
        if reduction.sizes is not None:
            state.sizes = reduction.sizes.gather(1, sel)
        elif state.sizes is not None:
            state.sizes = state.sizes.gather(1, sel)
        state.proportional = state.proportional or reduction.proportional_attention
        if state.proportional and state.sizes is None:
            state.sizes = torch.ones(batch, sel.shape[1], dtype=hidden.dtype, device=hidden.device)
        idx = prev.idx.to(hidden.device).gather(1, sel)
        state.positions = idx
        ones = torch.ones_like(sel, dtype=torch.bool)
        visual = prev.visual.to(hidden.device).gather(1, sel)
        state.stages.append(Stage(layer=index, idx=idx, valid=ones, visual=visual))
        return chosen.features

    # -- statistics ---------------------------------------------------------------------------
    def _stats(self, state: EncoderState) -> EncoderStats:
        counts = {stage.layer: stage.visual.sum(1).tolist() for stage in state.stages}
        widths = {stage.layer: stage.width for stage in state.stages}
        per_layer, seq = [], []
        current, width = counts[0], widths[0]
        for layer in range(self.stack.num_layers):
            current, width = counts.get(layer, current), widths.get(layer, width)
            per_layer.append(list(current))
            seq.append(width)
        d, m = self.stack.hidden_size, self.stack.mlp_size
        num_visual = list(per_layer[0]) if per_layer else []
        dense = [stack_flops([n] * self.stack.num_layers, d, m) for n in num_visual]
        pruned = [stack_flops(col, d, m) for col in zip(*per_layer)]
        return EncoderStats(per_layer, num_visual, seq, dense, pruned)
