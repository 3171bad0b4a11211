"""Decode steps over a KV cache whose deeper layers hold fewer tokens.

After a reduced prefill, layers from ``stage.layer`` on cached only that stage's slots, while
transformers sizes every decode mask from cache layer 0 (the full prompt). Each shrunk layer
therefore gets the mask columns of the keys it actually holds: the stage's slots, then every token
generated since. Positions need nothing ("keep": a new token's rotary position is its original
one), except with compact positions, where the new token is shifted by what the stage removed.

The column index of every stage is prepared once, when the prefill publishes the stage
(`prepare_columns`); a decode step only gathers the step's mask columns, once per stage (the layers
of a stage share it), and never reads a device tensor on the host — so a decode step traces into
one graph under ``torch.compile`` and a GPU never waits on the host inside the stack.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..errors import UnsupportedFeatureError
from .compat import cache_from_kwargs
from .masks import KeyColumns, decode_mask, dynamic_columns, static_columns
from .state import DecodeState, Stage

__all__ = ["decode_layer", "prepare_columns"]


def prepare_columns(stage: Stage, length: int, capacity: int | None) -> KeyColumns:
    """The key columns of a stage's cache layers: its slots (dynamic) or all static slots (static)."""
    if capacity is None:
        return dynamic_columns(stage.idx, stage.valid, bool(stage.all_valid), length)
    return static_columns(stage.idx, stage.valid, length, capacity)


def decode_layer(stack: Any, index: int, state: DecodeState, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    """Pre-hook body for decoder layer ``index`` during a decode (or continuation) forward."""
    record = state.record
    stage = record.stage_for(index)
    if stage is None or stage.layer == 0:
        return None
    hidden = args[0] if args else kwargs["hidden_states"]
    q = hidden.shape[1]
    total = None
    if record.capacity is None:  # a dynamic cache: lengths are shapes, checked without a device read
        cache = cache_from_kwargs(kwargs)
        if state.total is None:  # once per step: layer 0 already holds this step, and every hooked layer runs after it
            state.total = cache.get_seq_length()
        total = state.total
        if index == stage.layer:  # a stage's layers cached alike: its first layer's count checks them all
            expected = stage.width + total - q - record.length
            held = cache.get_seq_length(index)
            if held != expected:
                raise RuntimeError(
                    f"KV cache layer {index} holds {held} tokens, expected {expected}: "
                    "the cache was changed outside tokenprune (e.g. cropped) after a reduced prefill."
                )
    mask = kwargs.get("attention_mask")
    if mask is None and total is not None and stage.shift is None and record.columns[stage.layer].all_valid:
        return None  # no mask to slice (the layer attends to every key it holds) and no position to shift
    kwargs = dict(kwargs)
    kwargs["attention_mask"] = _mask(stack, state, stage, mask, hidden.dtype, total, q)
    if stage.shift is not None:
        kwargs["position_embeddings"] = _compact_rope(stack, state, stage, kwargs.get("position_ids"), hidden)
    return args, kwargs


def _mask(stack: Any, state: DecodeState, stage: Stage, mask: Tensor | None, dtype, total: int | None, q: int):
    """Columns of the keys this stage's layers hold; computed once per stage and step."""
    memo = state.memo.get(("mask", stage.layer))
    if memo is not None and memo[0] is mask:
        return memo[1]
    keys = state.record.columns[stage.layer]
    sliced = decode_mask(mask, keys, q, total, stack.attn_implementation, dtype)
    state.memo[("mask", stage.layer)] = (mask, sliced)
    return sliced


def _compact_rope(stack: Any, state: DecodeState, stage: Stage, positions: Tensor | None, hidden: Tensor):
    """Rotary tables of the new tokens at their compact positions (original minus what was removed)."""
    key = ("rope", stage.layer)
    if key not in state.memo:
        if positions is None:
            raise UnsupportedFeatureError("positions='compact' needs the model to pass position_ids to its decoder layers.")
        positions = positions[-1] if positions.dim() == 3 else positions
        positions = positions.expand(stage.idx.shape[0], -1).to(stage.idx.device)
        state.memo[key] = stack.rotary(hidden, positions - stage.shift.unsqueeze(1))
    return state.memo[key]
