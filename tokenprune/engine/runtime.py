"""The hook runtime: removes visual tokens from a decoder stack with forward pre-hooks only.

How tokens leave the stack (see docs, "Concepts"):

* A pre-hook on the VLM module reads ``input_ids`` (before visual features are scattered into the
  placeholders) and the 2-D attention mask, and plans the forward: which tokens are visual, which
  token is the query, how many visual tokens each sample keeps at each reduction layer.
* A pre-hook on the head module reads ``labels`` (training query: the token before each answer span).
* A pre-hook on every decoder layer from the first reduction layer on: at a reduction layer it
  scores and selects tokens and gathers the hidden states; at every shrunk layer it hands the
  layer the rows and columns of the mask and the rotary table that match its slots (the decoder
  loop passes the same full-length objects to every layer).
* The KV cache of a shrunk layer holds only its slots; the per-stage index maps are stored on the
  cache object and every decode step slices the mask columns with them.
* The model's ``loss_function`` is wrapped so labels follow the kept positions.

No forward is copied, no module is replaced, no class is patched; state_dict keys never change and
every hook is removable.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from ..errors import ScheduleError, UnsupportedFeatureError
from ..interfaces import ScoreContext, Strategy
from ..schedule import Schedule
from .compat import cache_from_kwargs
from .hooks import HookOwner
from .cache_kinds import check_cache, fit_static_layers, prefill_keys, static_capacity
from .boundary import reduce_boundary
from .compiled_selection import compiled_boundary
from .decode import decode_layer, prepare_columns
from .loss import AlignedLoss
from .masks import gather_rows, prefill_mask, query_visibility
from .plan import counted, plan_boundary, read_layout
from .sharding import require_gathered
from .state import (
    RECORD_ATTR,
    CacheRecord,
    CallState,
    CallStats,
    DecodeState,
    ForwardState,
    Stage,
    call_stats,
    last_true,
)

__all__ = ["Engine", "check_attention"]

_UNSET = object()
CHECKED_ATTR = "_tokenprune_checked"
"""Attribute a checked cache carries: ``(layer count, attention backend)`` it was checked with."""


def _known_length(cache: Any) -> int | None:
    """Tokens in cache layer 0 as a host int; ``None`` when only a device read could tell.

    A dynamic cache knows its length from tensor shapes (no sync). A static cache keeps it in a
    device tensor: read once per forward in eager mode (in the VLM pre-hook, never in a layer hook),
    not at all inside a compiled step, where a decode step trusts the record its prefill attached.
    """
    if cache is None:
        return 0
    length = cache.get_seq_length()
    if isinstance(length, Tensor):
        return None if torch.compiler.is_compiling() else int(length)
    return int(length)


def _rows_on_device(rows: list[list[int]], device: torch.device) -> tuple[Tensor, ...]:
    """One ``(B,)`` tensor per row, from one host->device copy; each row its own tensor (not a view at an
    offset of a shared one), so a compiled boundary step sees the same kind of input at every layer."""
    if not rows:
        return ()
    return tuple(row.clone() for row in torch.tensor(rows, dtype=torch.long, device=device))


def _real_tokens(mask: Any, visual: Tensor) -> Tensor:
    """``(B, L)`` real (non-padding) tokens, from whatever attention mask the VLM was given.

    Usually the 2-D padding mask. With a static cache transformers may hand over prepared 4-D masks
    (a dict per layer type, e.g. Qwen2's ``{"full_attention": ...}``): a real token attends to itself,
    a padding token's column is masked everywhere, so the diagonal tells which is which.
    """
    if isinstance(mask, dict):
        mask = mask.get("full_attention", next(iter(mask.values()), None))
    if mask is None:
        return torch.ones_like(visual)
    if mask.dim() == 2:
        return mask.to(visual.device).bool()
    if mask.dim() == 4:
        length = visual.shape[1]
        diagonal = mask[:, 0, :length, :length].diagonal(dim1=-2, dim2=-1)
        allowed = diagonal > torch.finfo(mask.dtype).min / 2 if mask.dtype.is_floating_point else diagonal.bool()
        return allowed.to(visual.device).expand_as(visual)
    return torch.ones_like(visual)


def check_attention(attn_implementation: str) -> None:
    """Raise for attention backends the engine cannot slice masks for."""
    if "flex" in attn_implementation:
        raise UnsupportedFeatureError(
            "Flex attention is not supported yet (a BlockMask cannot be sliced per stage). "
            "Load the model with attn_implementation='sdpa' (or 'eager' / 'flash_attention_2')."
        )


class Engine(HookOwner):
    """Installs and runs the hooks of one wrapped model.

    Args:
        model: the wrapped model.
        adapter: the adapter that located its parts.
        strategy: what to do.
    """

    def __init__(self, model: nn.Module, adapter: Any, strategy: Strategy):
        self.model = model
        self.adapter = adapter
        self.strategy = strategy
        self.stack = adapter.locate(model)
        self.layers = strategy.scheduler.resolve_layers(self.stack.num_layers)
        earliest, why = adapter.min_reduction_layer(model)
        if self.layers and self.layers[0] < earliest:
            raise ScheduleError(
                f"Reduction at layer {self.layers[0]} is too early for {type(model).__name__}: the first reduction "
                f"layer must be >= {earliest} ({why}). Move the first boundary later."
            )
        super().__init__()
        self._latest = CallState()  # the last completed call in any thread, for readers elsewhere
        # `compile_selection`'s (backend, mode); kept as settings, not as the compiled function, so that
        # deep copies and pickles of a wrapped model still work
        self._compiled: tuple[str, str | None] | None = None
        self._loss_owner: nn.Module | None = None
        self._saved_loss: Any = _UNSET

    # -- per-thread call state ----------------------------------------------------------------
    @property
    def _call(self) -> CallState:
        call = getattr(self._local, "call", None)
        if call is None:
            call = self._local.call = CallState()
        return call

    @property
    def stats(self) -> CallStats | None:
        """What this thread's last prefill did (else the last one in any thread)."""
        return self._call.stats if self._call.has_stats else self._latest.stats

    @property
    def stages(self) -> list[Stage]:
        """Stages of this thread's last prefill (else the last one in any thread)."""
        return self._call.stages if self._call.has_stats else self._latest.stages

    @property
    def final(self) -> tuple[int, Stage] | None:
        """``(original length, last stage)`` of this thread's last prefill, if it removed tokens."""
        return self._call.final

    def compile_selection(self, backend: str = "inductor", mode: str | None = None) -> None:
        """Run every reduction's selection step compiled (`engine.compiled_selection`)."""
        compiled_boundary(backend, mode)  # fails here, not in the first forward, where torch.compile cannot run
        self._compiled = (backend, mode)

    @property
    def boundary_step(self):
        """The boundary step this engine runs: `reduce_boundary`, or its compiled form after `compile_selection`."""
        return reduce_boundary if self._compiled is None else compiled_boundary(*self._compiled)

    # -- installation -------------------------------------------------------------------------
    def install(self) -> None:
        """Attach every hook; on any failure, remove what was attached (never a half-applied wrap)."""
        try:
            stack = self.stack
            self._handles.append(stack.vlm.register_forward_pre_hook(self._on_vlm, with_kwargs=True))
            self._handles.append(stack.vlm.register_forward_hook(self._after_vlm))
            if stack.head is not None:
                self._handles.append(stack.head.register_forward_pre_hook(self._on_head, with_kwargs=True))
                self._wrap_loss(stack.head)
            # From the layer below the first reduction layer on: scorers may compute with that layer
            # ("previous", FastV's convention), so its input is kept until the reduction layer runs.
            first = max(self.layers[0] - 1, 0) if self.layers else stack.num_layers
            for i in range(first, stack.num_layers):
                # A partial of a bound method (not a closure): deepcopy/pickle of the model then carry
                # one consistent copy of the engine.
                hook = functools.partial(self._on_layer, i)
                self._handles.append(stack.layers[i].register_forward_pre_hook(hook, with_kwargs=True))
        except Exception:
            self.remove()
            raise

    def remove(self) -> None:
        """Detach every hook and restore the loss function."""
        self._detach_hooks()
        if self._loss_owner is not None:
            if self._saved_loss is _UNSET:
                self._loss_owner.__dict__.pop("_loss_function", None)
            else:
                self._loss_owner.loss_function = self._saved_loss
            self._loss_owner = None

    def _wrap_loss(self, head: nn.Module) -> None:
        if not hasattr(type(head), "loss_function"):
            return
        self._saved_loss = head.__dict__.get("_loss_function", _UNSET)
        self._loss_owner = head
        head.loss_function = AlignedLoss(head.loss_function, self)

    # -- model-level hooks --------------------------------------------------------------------
    def _on_head(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._call.labels = None
        if isinstance(kwargs.get("logits_to_keep"), Tensor) and self.adapter.has_visual_inputs(kwargs):
            raise UnsupportedFeatureError(
                "A tensor-valued `logits_to_keep` indexes original positions, which no longer exist after "
                "tokens are removed. Pass an int (e.g. logits_to_keep=1) or unwrap the model."
            )
        self._call.labels = kwargs.get("labels")

    def _on_vlm(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        call = self._call
        labels, call.labels = call.labels, None
        call.forward = None
        cache = cache_from_kwargs(kwargs)
        self._check_backend(cache)
        visual_inputs = self.adapter.has_visual_inputs(kwargs)
        past = _known_length(cache)  # None: a static cache's length inside a compiled decode step
        if past == 0:  # a new prompt: forget the previous one's selection
            call.final, call.stages = None, []
            if cache is not None and hasattr(cache, RECORD_ATTR):
                delattr(cache, RECORD_ATTR)  # an emptied cache reused for a new prompt
                capacity = static_capacity(cache)
                if capacity is not None:  # layers a previous prompt sized down hold a full prompt again
                    fit_static_layers(cache, 1, capacity)
        if not visual_inputs:
            # Placeholder ids without images are plain text to the model (e.g. a generated id).
            call.forward = self._decode_state(cache)
            return
        if past is None or torch.compiler.is_compiling():
            raise UnsupportedFeatureError(
                "A forward with images ran inside torch.compile. tokenprune plans each prefill on the host (one read "
                "of the token layout), so compile the language model (model.model.language_model) or use "
                "generate's compiled decode (static cache + compile_config), and run the prefill of the whole VLM eagerly."
            )
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        visual = self.adapter.visual_mask(self.stack, input_ids, kwargs.get("inputs_embeds"))
        if past > 0:  # a continuation of a filled cache (one host read, in this pre-hook)
            if bool(visual.any()):
                raise UnsupportedFeatureError(
                    "Visual tokens arrived on a filled KV cache (chunked prefill, or a new image in a "
                    "continued conversation). tokenprune scores visual tokens in one prefill; pass the whole "
                    "prompt at once, or unwrap the model for this call."
                )
            call.forward = self._decode_state(cache)
            return
        valid = _real_tokens(kwargs.get("attention_mask"), visual)
        query, weight = self._queries(valid, labels)
        visual = visual & valid
        layout = read_layout(visual, valid, query)  # the one device->host read of the forward
        if not sum(layout.num_visual):
            return
        call.forward = self._plan(visual, valid, query, weight, layout, labels is not None, cache)

    def _after_vlm(self, module: nn.Module, args: tuple, output: Any) -> None:
        call = self._call
        state, call.forward = call.forward, None
        if isinstance(state, ForwardState):
            call.record(list(state.stages), self._stats)
            call.final = (state.length, state.current) if len(state.stages) > 1 else None
            self._latest = call

    @staticmethod
    def _decode_state(cache: Any) -> DecodeState | None:
        """The decode state of a forward over a cache that a reduced prefill filled (else None).

        No host read: a record is attached only by a prefill of this cache, and removed when the
        cache is found empty at the start of the next prefill with visual tokens.
        """
        record = getattr(cache, RECORD_ATTR, None) if cache is not None else None
        return DecodeState(record) if record is not None else None

    def _check_backend(self, cache: Any) -> None:
        """Refuse an attention backend or cache the engine cannot serve.

        A cache is checked again only when its layer count or the backend changed (its layers are
        created lazily by the first forward), not at every decode step.
        """
        attn_implementation = self.stack.attn_implementation
        check_attention(attn_implementation)
        if cache is None:
            return
        layers = getattr(cache, "layers", None)
        key = (len(layers) if layers is not None else -1, attn_implementation)
        if getattr(cache, CHECKED_ATTR, None) != key:
            check_cache(cache, attn_implementation)
            setattr(cache, CHECKED_ATTR, key)

    # -- planning -----------------------------------------------------------------------------
    def _plan(self, visual: Tensor, valid: Tensor, query: Tensor, weight: Tensor, layout, training: bool, cache: Any) -> ForwardState:
        batch, length = visual.shape
        num_visual = list(layout.num_visual)
        schedule = self.strategy.scheduler.plan(self.stack.num_layers, num_visual)
        if training:
            # A labelled sample without an answer span keeps everything (official behaviour).
            no_query = (weight.sum(1) == 0).tolist()
            if any(no_query):
                keep = tuple(tuple(n if skip else k for k, n, skip in zip(row, num_visual, no_query)) for row in schedule.keep)
                schedule = Schedule(schedule.num_layers, schedule.layers, schedule.num_visual, keep)
        # A tensor of its own (not an expanded view): every stage's positions then look alike to a compiled
        # boundary step, so the first boundary does not compile a graph of its own.
        positions = torch.arange(length, device=visual.device).unsqueeze(0)
        positions = positions if batch == 1 else positions.expand(batch, -1).contiguous()
        first = Stage(layer=0, idx=positions, valid=valid, visual=visual, counts=layout.num_visual, all_valid=not layout.padded,
                      span=layout.visual_span)  # fmt: skip
        # Each boundary's n_keep (as `plan_boundary` derives it), copied to the device here, before the stack.
        n_keep = [[max(int(t) - vq, 0) for t, vq in zip(row, layout.visual_queries)] for row in schedule.keep]
        return ForwardState(
            length=length, schedule=schedule, query=query, query_weight=weight, stages=[first], layout=layout,
            capacity=static_capacity(cache), last_query=not training,
            n_keep=_rows_on_device(n_keep, visual.device),
        )  # fmt: skip

    def _queries(self, valid: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """Original positions ``(B, Q)`` and weights of the query tokens.

        Inference: the last prompt token. Training (labels given): the token before each answer span
        (``labels[p] == -100`` and ``labels[p + 1] != -100``), averaged, as the official PyramidDrop code.
        """
        if labels is None:
            return last_true(valid).unsqueeze(1), torch.ones(valid.shape[0], 1, device=valid.device)
        labels = labels.to(valid.device)
        supervised = labels != -100
        starts = ~supervised[:, :-1] & supervised[:, 1:]
        starts = F.pad(starts, (0, 1), value=False)
        count = starts.sum(1, keepdim=True)
        width = max(int(count.max()), 1)  # training only: one host read in the VLM pre-hook, before the stack
        order = torch.argsort((~starts).int() * (starts.shape[1] + 1) + torch.arange(starts.shape[1], device=valid.device), dim=1)
        query = order[:, :width]
        entry_valid = torch.arange(width, device=valid.device).unsqueeze(0) < count
        query = torch.where(entry_valid, query, query[:, :1])
        weight = entry_valid.to(torch.float32) / count.clamp(min=1)
        return query, weight

    # -- layer hooks --------------------------------------------------------------------------
    def _on_layer(self, index: int, module: nn.Module, args: tuple, kwargs: dict):
        state = self._call.forward
        if state is None:
            return None
        if isinstance(state, DecodeState):
            return decode_layer(self.stack, index, state, args, kwargs)
        return self._prefill_layer(index, module, state, args, kwargs)

    def _prefill_layer(self, index: int, module: nn.Module, state: ForwardState, args: tuple, kwargs: dict):
        hidden, from_args = (args[0], True) if args else (kwargs["hidden_states"], False)
        if index in self.layers:
            reduced = self._reduce(index, module, state, hidden, kwargs)
            if reduced is not None:
                hidden = reduced
        if index + 1 in self.layers:  # what this layer sees, for a scorer that computes with it
            state.memo[("previous", index + 1)] = (module, hidden, kwargs.get("attention_mask"), kwargs.get("position_embeddings"))
        stage = state.current
        if len(state.stages) == 1:
            return None  # nothing removed yet: the layer runs untouched (keep-all is bitwise identity)
        if hidden.shape[1] != stage.width:
            raise RuntimeError(
                f"Layer {index} received {hidden.shape[1]} tokens but tokenprune expected {stage.width}; "
                "another hook or wrapper changed the sequence length."
            )
        kwargs = dict(kwargs)
        kwargs.update(self._stage_inputs(state, stage, kwargs, hidden))
        if from_args:
            return (hidden, *args[1:]), kwargs
        kwargs["hidden_states"] = hidden
        return args, kwargs

    def _reduce(self, index: int, module: nn.Module, state: ForwardState, hidden: Tensor, kwargs: dict) -> Tensor | None:
        prev = state.current
        step = self.layers.index(index)
        target = state.schedule.keep[step]
        plan = plan_boundary(state.layout, prev.counts, target)
        if not plan.removes:
            return None  # this boundary removes nothing in any sample (known on the host)
        # The query is the last slot when it is the last real token and no slot is a filler (host-known).
        last_slot = state.last_query and bool(prev.all_valid)
        query = self._query_slots(state, prev, last_slot)
        n_keep = state.n_keep[step]  # planned in the VLM pre-hook: no host->device copy here
        mask = self._stage_mask(state, prev, kwargs.get("attention_mask"), hidden.dtype)
        full_rope = kwargs.get("position_embeddings")
        rope = self._stage_rope(state, prev, kwargs, hidden)
        previous = state.memo.pop(("previous", index), None)
        # ... and then, without a mask, it sees every slot with weight 1: no visibility mask, no mean over rows.
        sees_all = last_slot and mask is None

        def source(layer: str) -> tuple[nn.Module, Tensor, Any, Any]:
            """(module, input hidden, rotary tables, mask) of the chosen layer on the current slots."""
            if layer == "current":
                return module, hidden, rope, mask
            if layer != "previous":
                raise ValueError(f"layer must be 'current' or 'previous', got {layer!r}.")
            p_module, p_hidden, p_mask, p_rope = previous
            require_gathered(p_module, index - 1)  # FSDP2 resharded it after its forward: a clear error
            p_rope = self._stage_rope(state, prev, {"position_embeddings": p_rope}, p_hidden)
            return p_module, p_hidden, p_rope, self._stage_mask(state, prev, p_mask, p_hidden.dtype)

        def cached_keys(layer: str) -> dict[str, Tensor]:
            """``{"keys": ...}`` for the adapter: the keys the layer below cached in this prefill (its own
            attention's, bit for bit what computing them again gives), when the adapter takes them
            (`Adapter.reads_cached_keys`) and a dynamic cache holds exactly them; else ``{}``."""
            if layer != "previous" or not self.adapter.reads_cached_keys or state.capacity is not None:
                return {}
            keys = prefill_keys(cache_from_kwargs(kwargs), index - 1, hidden.shape[1])
            return {} if keys is None else {"keys": keys}

        def rows_attention(rows: Tensor, weight: Tensor, layer: str) -> Tensor:
            """`ScoreContext.attention_from`: the chosen layer's attention of ``rows`` (the query rows
            themselves take the shortcut of `_attention`'s ``sees_all`` when the host allows it)."""
            module_, hidden_, rope_, mask_ = source(layer)
            all_seen = sees_all and rows is query and weight is state.query_weight and mask_ is None
            return self._attention(module_, hidden_, rope_, mask_, prev, rows, weight, all_seen, **cached_keys(layer))

        ctx = ScoreContext(
            layer_index=index,
            layer=module,
            hidden=hidden,
            positions=prev.idx,
            valid=prev.valid,
            visual=prev.visual,
            query=query,
            query_weight=state.query_weight,
            _attention=lambda: self._attention(module, hidden, rope, mask, prev, query, state.query_weight, sees_all),
            _rows=lambda rows, weight, layer: rows_attention(rows, weight, layer),
            _keys=lambda layer: self.adapter.layer_keys(*source(layer)[:3], **cached_keys(layer)),
            stage=step,
            visual_counts=prev.counts,
            keep_counts=plan.n_keep,
        )
        exact = self.strategy.reducer.exact_count
        gather_rope = full_rope is not None and self.strategy.positions != "compact"
        # One run of visual slots, the same in every row, each row keeping the same count: it stays one
        # run (text is kept, the kept visual slots close up), and eager selection takes the ranked path.
        span = prev.span if exact and plan.all_valid and len(set(plan.n_keep)) == 1 else None
        args = [ctx, self.strategy.scorer, self.strategy.reducer, n_keep, plan.width if exact else None,
                rope if gather_rope else None, exact and plan.all_valid, any(state.layout.visual_queries)]  # fmt: skip
        done = self.boundary_step(*args, span) if span is not None and self._compiled is None else self.boundary_step(*args)
        chosen = done.chosen
        if chosen.reduction is not None and chosen.reduction.proportional_attention:
            raise UnsupportedFeatureError(
                f"{self.strategy.reducer!r} asks for proportional attention, which only vision-encoder blocks apply; "
                "inside the LLM a merged token attends as one token. Turn proportional_attention off."
            )
        if not exact:  # the reducer decided its own counts: read them once
            plan = counted(chosen.keep, prev.visual, plan)
        stage = Stage(
            layer=index,
            idx=done.idx,
            valid=chosen.valid,
            visual=done.visual,
            counts=plan.visual,
            all_valid=plan.all_valid,
            span=None if span is None else (span[0], span[0] + plan.visual[0]),
        )
        if gather_rope:  # the stage's rotary rows came with the boundary: its layers reuse them
            state.memo[("rope", index)] = [(full_rope, done.rope)]
        if self.strategy.positions == "compact":
            stage.shift = self._compact_shift(stage, kwargs, state)
        state.stages.append(stage)
        self._publish(state, cache_from_kwargs(kwargs))
        return chosen.features

    def _attention(
        self, module, hidden, rope, mask, stage: Stage, query: Tensor, weight: Tensor, sees_all: bool = False, **keys
    ) -> Tensor:
        """``(B, n)`` weighted attention of the ``query`` rows; ``sees_all``: one unit-weight row per sample
        that sees every slot (host-known), so the visibility mask and the mean over rows are skipped.
        ``keys``: ``keys=`` the layer's cached keys for the adapter, or nothing (it computes them)."""
        if sees_all:
            return self.adapter.query_attention(module, hidden, rope, None, None, **keys).squeeze(1)
        allowed = query_visibility(mask, stage.idx, stage.valid, query)
        probs = self.adapter.query_attention(module, hidden, rope, query, allowed, **keys)  # (B, Q, n)
        weight = weight.to(device=probs.device, dtype=probs.dtype).unsqueeze(-1)
        # A zero-weight row (padding, a filler slot) may see no key at all: its NaN must not spread.
        return torch.where(weight != 0, probs * weight, 0.0).sum(1)

    def _query_slots(self, state: ForwardState, stage: Stage, last_slot: bool = False) -> Tensor:
        """``(B, Q)`` slot index of each query token in ``stage`` (``last_slot``: known to be the last slot)."""
        if last_slot:
            return torch.full((stage.idx.shape[0], 1), stage.width - 1, dtype=torch.long, device=stage.idx.device)
        match = stage.idx.unsqueeze(1) == state.query.to(stage.idx.device).unsqueeze(2)  # (B, Q, n)
        return match.int().argmax(-1)

    def _publish(self, state: ForwardState, cache: Any) -> None:
        """Store the stages on the cache, with each stage's decode-time key columns prepared once."""
        if cache is None:
            return
        if state.record is None:
            state.record = CacheRecord(length=state.length, stages=state.stages, capacity=state.capacity)
            setattr(cache, RECORD_ATTR, state.record)
        stage = state.current
        state.record.columns[stage.layer] = prepare_columns(stage, state.length, state.capacity)
        if state.capacity is not None:  # a static cache: the stage's layers hold only what they can ever hold
            fit_static_layers(cache, stage.layer, state.record.columns[stage.layer].index.shape[1])

    # -- per-stage slices ---------------------------------------------------------------------
    def _stage_inputs(self, state: ForwardState, stage: Stage, kwargs: dict, hidden: Tensor) -> dict:
        """The keyword arguments every layer of ``stage`` gets in place of the full-length ones.

        Built once per stage: the layers of a stage receive the same mask and rotary tables from the
        model, so later layers find the dict by identity of those two objects.
        """
        mask, rope = kwargs.get("attention_mask"), kwargs.get("position_embeddings")
        memo = state.memo.get(("inputs", stage.layer))
        if memo is not None and memo[0] is mask and memo[1] is rope:
            return memo[2]
        inputs = {
            "attention_mask": self._stage_mask(state, stage, mask, hidden.dtype),
            "position_embeddings": self._stage_rope(state, stage, kwargs, hidden),
            "position_ids": None,  # positions live in the rotary tables; FA2 would read gaps as packing
        }
        state.memo[("inputs", stage.layer)] = (mask, rope, inputs)  # keeps both alive: identity stays meaningful
        return inputs

    def _stage_mask(self, state: ForwardState, stage: Stage, mask: Tensor | None, dtype: torch.dtype):
        """The mask of the layers of ``stage``, computed once per stage and source mask (compared by identity)."""
        if stage.layer == 0:
            return mask
        memo = state.memo.setdefault(("mask", stage.layer), [])
        for source, sliced in memo:
            if source is mask:
                return sliced
        keys = state.record.columns[stage.layer] if state.capacity is not None and state.record is not None else None
        sliced = prefill_mask(mask, stage.idx, stage.valid, self.stack.attn_implementation, dtype, bool(stage.all_valid), keys)
        memo.append((mask, sliced))  # keeps `mask` alive, so identity stays meaningful
        return sliced

    def _stage_rope(self, state: ForwardState, stage: Stage, kwargs: dict, hidden: Tensor):
        rope = kwargs.get("position_embeddings")
        if stage.layer == 0:
            return rope
        memo = state.memo.setdefault(("rope", stage.layer), [])
        for source, sliced in memo:
            if source is rope:
                return sliced
        if self.strategy.positions == "compact":
            compact = (stage.valid.long().cumsum(1) - 1).clamp(min=0)
            sliced = self.stack.rotary(hidden, compact)
        else:
            sliced = tuple(gather_rows(t, stage.idx) for t in rope)
        memo.append((rope, sliced))
        return sliced

    def _compact_shift(self, stage: Stage, kwargs: dict, state: ForwardState) -> Tensor:
        """Original minus compact position of each row's last real token (decode positions shift by it)."""
        positions = kwargs.get("position_ids")
        batch = stage.idx.shape[0]
        full = state.stages[0]
        last = last_true(full.valid)
        if positions is None:
            original = last
        else:
            positions = positions[-1] if positions.dim() == 3 else positions
            original = positions.expand(batch, -1).gather(1, last.unsqueeze(1).to(positions.device)).squeeze(1)
        return original.to(stage.idx.device) - (stage.valid.sum(1) - 1)

    # -- statistics ---------------------------------------------------------------------------
    def _stats(self, stages: list[Stage]) -> CallStats:
        return call_stats(stages, self.stack.num_layers, self.stack.text_config)
