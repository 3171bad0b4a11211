"""Attention masks for a shrunk sequence, in whatever format the attention backend uses.

transformers hands every decoder layer the same full-length mask, in one of these formats:
``None`` (SDPA/flash fast path: causal, no padding), a 4-D ``(B|1, 1, q, kv)`` bool (SDPA) or
additive float (eager) mask, or a 2-D ``(B, kv)`` padding mask (flash). A shrunk layer needs the
rows and columns of the slots it holds, with filler slots masked out as keys. Gathering the
original mask (rather than rebuilding one) keeps whatever else the model put in it.

Nothing here reads a device tensor on the host: whether a stage has filler slots is known from the
host plan (`engine.plan`) and passed in as ``all_valid``.

Key columns. With a dynamic cache a shrunk layer's keys are its slots (then, in decode, the tokens
generated since), so its columns are the slots' original positions. With a static cache a shrunk
layer holds ``width + max_cache_len - L`` key slots (its buffers are sized to what it can ever hold):
slot ``j < width`` holds the stage's ``j``-th token, slot ``j >= width`` the ``(j - width)``-th
generated token (original position ``L + j - width``). `KeyColumns` carries that map, built once per
prefill.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["KeyColumns", "dynamic_columns", "static_columns", "prefill_mask", "decode_mask", "query_visibility", "gather_rows"]


def gather_rows(t: Tensor, idx: Tensor) -> Tensor:
    """``t[b, idx[b]]`` for a ``(B|1, L, ...)`` tensor and ``(B, n)`` indices.

    A row copy through one ``index_select`` over the flattened batch, not ``gather`` with an index
    expanded over the feature dimensions: the same values bit for bit (both are copies), but one
    index per row instead of one per element, which on the CPU is 3-5x faster for the hidden
    states and rotary tables an LLM boundary gathers. Views that cannot be flattened without a copy
    (a transposed tensor) keep the element-wise ``gather``.
    """
    idx = idx if idx.device == t.device else idx.to(t.device)
    batch, n = idx.shape
    rest = t.shape[2:]
    # One table shared by the batch (rotary rows, a broadcast mask). Not when it needs a gradient:
    # the rows' gradients would then add up in another order than the expanded gather's.
    if t.shape[0] == 1 and not (t.requires_grad and torch.is_grad_enabled()):
        return t[0].index_select(0, idx.reshape(-1)).view(batch, n, *rest)
    if t.shape[0] == batch and t.is_contiguous():
        offsets = torch.arange(0, batch * t.shape[1], t.shape[1], device=t.device).unsqueeze(1)
        return t.reshape(-1, *rest).index_select(0, (idx + offsets).reshape(-1)).view(batch, n, *rest)
    t = t.expand(batch, *t.shape[1:]) if t.shape[0] == 1 else t
    view = idx.view(batch, n, *([1] * len(rest))).expand(batch, n, *rest)
    return t.gather(1, view)


@dataclass
class KeyColumns:
    """Which full-length mask column each key slot of a shrunk layer reads, prepared once per prefill.

    Attributes:
        index: ``(B, K)`` column of the full-length mask for each key slot.
        valid: ``(B, K)`` False for key slots that must never be attended (fillers, unfillable slots).
        all_valid: ``valid`` is all True (host-known; no masking pass needed).
        prompt_length: the original prompt length ``L`` (dynamic decode: columns from ``L`` on are new tokens).
        static: keys are the ``max_cache_len`` slots of a static cache layer.
    """

    index: Tensor
    valid: Tensor
    all_valid: bool
    prompt_length: int
    static: bool


def dynamic_columns(idx: Tensor, valid: Tensor, all_valid: bool, length: int) -> KeyColumns:
    """Key columns of a dynamic-cache layer holding the slots ``idx`` (original positions)."""
    return KeyColumns(idx, valid, all_valid, length, static=False)


def static_columns(idx: Tensor, valid: Tensor, length: int, capacity: int) -> KeyColumns:
    """Key columns of a static-cache layer holding the slots ``idx`` first, then the generated tokens.

    Layer 0 holds ``capacity`` tokens at most (the cache's ``max_cache_len``), so a layer that keeps
    ``width`` of the ``L`` prompt tokens holds ``width + capacity - L`` at most: the engine sizes the
    layer's buffers to that (`cache_kinds.fit_static_layers`), and slot ``j >= width`` holds generated
    token ``j - width`` (column ``L + j - width`` of layer 0's mask, at most ``capacity - 1``).
    """
    batch, width = idx.shape
    slots = width + capacity - length
    generated = torch.arange(length, length + slots - width, device=idx.device).expand(batch, -1)
    index = torch.cat([idx, generated], dim=1)
    return KeyColumns(index, torch.cat([valid, torch.ones_like(generated, dtype=torch.bool)], dim=1), False, length, True)


def _is_additive(mask: Tensor) -> bool:
    return mask.dtype.is_floating_point


def _allowed(mask: Tensor) -> Tensor:
    """Bool view of a mask: True where attention is allowed."""
    if _is_additive(mask):
        return mask > torch.finfo(mask.dtype).min / 2
    return mask.bool()


def _mask_keys(mask: Tensor, key_valid: Tensor) -> Tensor:
    """Mask out the invalid keys ``(B, K)`` of a 4-D mask, in its own format."""
    key_valid = key_valid.to(mask.device)[:, None, None, :]
    if _is_additive(mask):
        return mask.masked_fill(~key_valid, torch.finfo(mask.dtype).min)
    return mask & key_valid


def _self_fallback(mask: Tensor) -> Tensor:
    """Let a query row with no allowed key attend to its own slot (row ``r`` is key slot ``r``).

    A filler's own row would otherwise be empty and give NaN in SDPA, and a NaN value vector
    poisons every row through ``0 * NaN``. Computed without a host read: a no-op on rows that see a key.
    """
    rows, cols = mask.shape[-2], mask.shape[-1]
    empty = ~_allowed(mask).any(-1, keepdim=True)
    eye = torch.arange(rows, device=mask.device)[:, None] == torch.arange(cols, device=mask.device)[None, :]
    fix = empty & eye
    return mask.masked_fill(fix, 0.0) if _is_additive(mask) else mask | fix


def _from_allowed(allowed: Tensor, attn_impl: str, dtype: torch.dtype) -> Tensor:
    """Build a 4-D mask of the backend's format from a bool ``(B, 1, q, kv)`` allowed-matrix."""
    if attn_impl == "eager":
        zeros = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return zeros.masked_fill(~allowed, torch.finfo(dtype).min)
    return allowed


def _gather_columns(mask: Tensor, index: Tensor) -> Tensor:
    """``mask[b, h, i, index[b, j]]`` for a 4-D mask and ``(B, K)`` column indices."""
    batch, heads, q, _ = mask.shape
    return mask.gather(3, index.to(mask.device)[:, None, None, :].expand(batch, heads, q, -1))


def prefill_mask(
    mask: Tensor | None,
    idx: Tensor,
    valid: Tensor,
    attn_impl: str,
    dtype: torch.dtype,
    all_valid: bool,
    keys: KeyColumns | None = None,
) -> Tensor | None:
    """The mask for slots at original positions ``idx`` (``(B, n)``, ascending per row).

    Args:
        mask: the full-length mask the decoder loop passes to every layer.
        idx: original position of each slot.
        valid: ``(B, n)`` False for filler slots.
        attn_impl: the attention implementation (decides the format built when ``mask`` is None).
        dtype: hidden-state dtype (for additive masks).
        all_valid: no filler slot (host-known).
        keys: the layer's key columns when they differ from its slots (a static cache).
    """
    col_index, col_valid = (idx, valid) if keys is None else (keys.index, keys.valid)
    if mask is None:
        if all_valid and keys is None:
            return None  # kept slots are in original order, so plain causal attention stays right
        if attn_impl.startswith("flash"):
            return col_valid.long()
        allowed = (col_index[:, None, :] <= idx[:, :, None]) & col_valid[:, None, :]
        return _self_fallback(_from_allowed(allowed.unsqueeze(1), attn_impl, dtype))
    if mask.dim() == 2:
        return gather_rows(mask.unsqueeze(-1), col_index).squeeze(-1) * col_valid.to(mask.dtype)
    mask = mask.expand(idx.shape[0], *mask.shape[1:]) if mask.shape[0] == 1 else mask
    batch, heads, _, kv = mask.shape
    rows = mask.gather(2, idx.to(mask.device)[:, None, :, None].expand(batch, heads, -1, kv))
    cols = _gather_columns(rows, col_index)
    if all_valid and keys is None:
        return cols
    return _self_fallback(_mask_keys(cols, col_valid))


def decode_mask(mask: Tensor | None, keys: KeyColumns, q: int, total: int | None, attn_impl: str, dtype: torch.dtype):
    """The mask of a decode (or continuation) step at a shrunk layer: columns of the keys it holds.

    Args:
        mask: the full-length decode mask (sized from cache layer 0).
        keys: the layer's key columns, prepared at prefill.
        q: number of new tokens in this step.
        total: tokens in cache layer 0 including this step (needed only for a dynamic cache
            without a mask; a host int there, never a device read).
    """
    batch = keys.index.shape[0]
    if keys.static:
        if mask is None or mask.dim() != 4:
            raise RuntimeError("A static cache decode step needs a 4-D attention mask (sdpa or eager attention).")
        mask = mask.expand(batch, *mask.shape[1:]) if mask.shape[0] == 1 else mask
        return _mask_keys(_gather_columns(mask, keys.index), keys.valid)
    length = keys.prompt_length
    if mask is None:
        if keys.all_valid:
            return None
        new = torch.ones(batch, total - length, dtype=torch.bool, device=keys.valid.device)
        if attn_impl.startswith("flash"):
            return torch.cat([keys.valid, new], dim=1).long()
        new_pos = torch.arange(length, total, device=keys.valid.device)
        q_pos = torch.arange(total - q, total, device=keys.valid.device)
        causal_new = (new_pos[None, :] <= q_pos[:, None]).expand(batch, 1, q, -1)
        old = keys.valid[:, None, None, :].expand(batch, 1, q, -1)
        return _from_allowed(torch.cat([old, causal_new], dim=-1), attn_impl, dtype)
    if mask.dim() == 2:
        head = mask[:, :length].gather(1, keys.index.to(mask.device))
        if not keys.all_valid:
            head = head * keys.valid.to(mask.dtype)
        return torch.cat([head, mask[:, length:]], dim=1)
    mask = mask.expand(batch, *mask.shape[1:]) if mask.shape[0] == 1 else mask
    head = _gather_columns(mask[..., :length], keys.index)
    if not keys.all_valid:
        head = _mask_keys(head, keys.valid)
    return torch.cat([head, mask[..., length:]], dim=-1)


def query_visibility(mask: Tensor | None, idx: Tensor, valid: Tensor, query: Tensor) -> Tensor:
    """``(B, Q, n)``: which slots each query row may attend to (causal, valid, and the model's mask).

    Args:
        mask: the mask of the current (possibly already shrunk) sequence, over its own slots.
        idx: ``(B, n)`` original positions of the slots.
        valid: ``(B, n)`` real-token flags.
        query: ``(B, Q)`` slot index of each query row.
    """
    n = idx.shape[1]
    q_idx = idx.gather(1, query)
    allowed = (idx[:, None, :] <= q_idx[:, :, None]) & valid[:, None, :]
    if mask is None:
        return allowed
    if mask.dim() == 2:
        return allowed & mask[:, :n].bool().to(idx.device)[:, None, :]
    mask = mask.expand(idx.shape[0], *mask.shape[1:]) if mask.shape[0] == 1 else mask
    rows = mask[:, 0, :, :n].gather(1, query.to(mask.device)[:, :, None].expand(-1, -1, n))
    return allowed & _allowed(rows).to(idx.device)
