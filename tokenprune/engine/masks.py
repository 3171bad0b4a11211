"""Attention masks for a shrunk sequence, in whatever format the attention backend uses.

transformers hands every decoder layer the same full-length mask, in one of these formats:
``None`` (SDPA/flash fast path: causal, no padding), a 4-D ``(B|1, 1, q, kv)`` bool (SDPA) or
additive float (eager) mask, or a 2-D ``(B, kv)`` padding mask (flash). A shrunk layer needs the
rows and columns of the slots it holds, with filler slots masked out as keys. Gathering the
original mask (rather than rebuilding one) keeps whatever else the model put in it.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["prefill_mask", "decode_mask", "query_visibility", "gather_rows"]


def gather_rows(t: Tensor, idx: Tensor) -> Tensor:
    """``t[b, idx[b]]`` for a ``(B|1, L, ...)`` tensor and ``(B, n)`` indices."""
    t = t.expand(idx.shape[0], *t.shape[1:]) if t.shape[0] == 1 else t
    view = idx.view(*idx.shape, *([1] * (t.dim() - 2))).expand(*idx.shape, *t.shape[2:])
    return t.gather(1, view.to(t.device))


def _is_additive(mask: Tensor) -> bool:
    return mask.dtype.is_floating_point


def _allowed(mask: Tensor) -> Tensor:
    """Bool view of a mask: True where attention is allowed."""
    if _is_additive(mask):
        return mask > torch.finfo(mask.dtype).min / 2
    return mask.bool()


def _apply_keys(mask: Tensor, key_valid: Tensor) -> Tensor:
    """Mask out invalid keys of a 4-D mask; a row left with no key may attend to itself.

    Filler slots are masked for every query; a filler's own row would otherwise be empty and give
    NaN in SDPA, and a NaN value vector poisons every row through ``0 * NaN``.
    """
    key_valid = key_valid.to(mask.device)[:, None, None, :]
    if _is_additive(mask):
        out = mask.masked_fill(~key_valid, torch.finfo(mask.dtype).min)
    else:
        out = mask & key_valid
    empty = ~_allowed(out).any(-1, keepdim=True)
    if empty.any() and out.shape[-2] == out.shape[-1]:
        eye = torch.eye(out.shape[-1], dtype=torch.bool, device=out.device)
        fix = empty & eye
        out = out.masked_fill(fix, 0.0) if _is_additive(out) else out | fix
    return out


def _from_allowed(allowed: Tensor, attn_impl: str, dtype: torch.dtype) -> Tensor:
    """Build a 4-D mask of the backend's format from a bool ``(B, 1, q, kv)`` allowed-matrix."""
    if attn_impl == "eager":
        zeros = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return zeros.masked_fill(~allowed, torch.finfo(dtype).min)
    return allowed


def prefill_mask(mask: Tensor | None, idx: Tensor, valid: Tensor, attn_impl: str, dtype: torch.dtype) -> Tensor | None:
    """The mask for slots at original positions ``idx`` (``(B, n)``, ascending per row).

    Args:
        mask: the full-length mask the decoder loop passes to every layer.
        idx: original position of each slot.
        valid: ``(B, n)`` False for filler slots.
        attn_impl: the attention implementation (decides the format built when ``mask`` is None).
        dtype: hidden-state dtype (for additive masks).
    """
    if mask is None:
        if bool(valid.all()):
            return None  # kept slots are in original order, so plain causal attention stays right
        if attn_impl.startswith("flash"):
            return valid.long()
        allowed = (idx[:, None, :] <= idx[:, :, None]).unsqueeze(1)
        return _apply_keys(_from_allowed(allowed, attn_impl, dtype), valid)
    if mask.dim() == 2:
        return gather_rows(mask.unsqueeze(-1), idx).squeeze(-1) * valid.to(mask.dtype)
    mask = mask.expand(idx.shape[0], *mask.shape[1:]) if mask.shape[0] == 1 else mask
    batch, heads, _, kv = mask.shape
    rows = mask.gather(2, idx.to(mask.device)[:, None, :, None].expand(batch, heads, -1, kv))
    cols = rows.gather(3, idx.to(mask.device)[:, None, None, :].expand(batch, heads, idx.shape[1], -1))
    return _apply_keys(cols, valid)


def decode_mask(
    mask: Tensor | None,
    kv_idx: Tensor,
    kv_valid: Tensor,
    q_pos: Tensor,
    attn_impl: str,
    dtype: torch.dtype,
) -> Tensor | None:
    """The mask of a decode step at a shrunk layer: columns of the keys that layer's cache holds.

    Args:
        mask: the full-length decode mask (sized from cache layer 0).
        kv_idx: ``(B, nk)`` position (in cache-layer-0 coordinates) of each key the layer holds.
        kv_valid: ``(B, nk)`` False for filler keys.
        q_pos: ``(q,)`` positions of the new tokens.
    """
    if mask is None:
        if bool(kv_valid.all()):
            return None
        if attn_impl.startswith("flash"):
            return kv_valid.long()
        allowed = (kv_idx[:, None, :] <= q_pos.to(kv_idx.device)[None, :, None]) & kv_valid[:, None, :]
        return _from_allowed(allowed.unsqueeze(1), attn_impl, dtype)
    if mask.dim() == 2:
        return mask.gather(1, kv_idx.to(mask.device)) * kv_valid.to(mask.dtype)
    mask = mask.expand(kv_idx.shape[0], *mask.shape[1:]) if mask.shape[0] == 1 else mask
    batch, heads, q, _ = mask.shape
    cols = mask.gather(3, kv_idx.to(mask.device)[:, None, None, :].expand(batch, heads, q, -1))
    key_valid = kv_valid.to(mask.device)[:, None, None, :]
    if _is_additive(cols):
        return cols.masked_fill(~key_valid, torch.finfo(cols.dtype).min)
    return cols & key_valid


def query_visibility(mask: Tensor | None, idx: Tensor, valid: Tensor, query: Tensor) -> Tensor:
    """``(B, Q, n)``: which slots each query row may attend to (causal, valid, and the model's mask).

    Args:
        mask: the mask of the current (possibly already shrunk) sequence.
        idx: ``(B, n)`` original positions of the slots.
        valid: ``(B, n)`` real-token flags.
        query: ``(B, Q)`` slot index of each query row.
    """
    q_idx = idx.gather(1, query)
    allowed = (idx[:, None, :] <= q_idx[:, :, None]) & valid[:, None, :]
    if mask is None:
        return allowed
    if mask.dim() == 2:
        return allowed & mask.bool().to(idx.device)[:, None, :]
    mask = mask.expand(idx.shape[0], *mask.shape[1:]) if mask.shape[0] == 1 else mask
    rows = mask[:, 0].gather(1, query.to(mask.device)[:, :, None].expand(-1, -1, mask.shape[-1]))
    return allowed & _allowed(rows).to(idx.device)
