"""Which transformers cache layers can hold a reduced stack, and how each is addressed.

A reduced layer holds fewer tokens than layer 0, so its cache must keep a length of its own:
* dynamic layers (``DynamicLayer``) grow by concatenation, so each holds exactly what it was given;
* static layers (``StaticLayer``, ``cache_implementation="static"``) write at their own
  ``cumulative_length``: a shrunk layer writes its ``width`` prompt slots first and every generated
  token after them, and the engine maps each slot to a column of the full-length mask
  (`masks.static_columns`).

Sliding-window layers drop their oldest tokens by count, which for a reduced layer are not the
tokens layer 0 drops, and quantized or offloaded layers re-pack tokens the engine indexes: they are
refused with a message, never run with silently wrong masks.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import UnsupportedFeatureError

__all__ = ["check_cache", "static_capacity", "fit_static_layers", "prefill_keys"]

_DYNAMIC = "DynamicLayer"
_STATIC = "StaticLayer"
_SUPPORTED = (_DYNAMIC, _STATIC)


def _kind(layer: Any) -> str:
    """The cache layer's class name (the layer classes are transformers', not the model's)."""
    return type(layer).__name__


def check_cache(cache: Any, attn_implementation: str) -> None:
    """Raise, naming the fix, for a cache whose layers cannot hold per-stage lengths."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        return  # a cache without layer objects is refused by transformers itself
    for layer in layers:
        kind = _kind(layer)
        if kind not in _SUPPORTED:
            raise UnsupportedFeatureError(
                f"{type(cache).__name__} with {kind} layers is not supported: reduced layers hold fewer tokens than "
                "layer 0, which only DynamicLayer and StaticLayer caches can address (sliding-window, quantized and "
                "offloaded layers re-pack tokens by count). Use the default DynamicCache or "
                "cache_implementation='static'."
            )
        if kind == _STATIC and attn_implementation.startswith("flash"):
            raise UnsupportedFeatureError(
                "A static cache with flash attention is not supported with tokenprune yet (its reduced layers need a "
                "4-D mask over their cache slots). Use attn_implementation='sdpa' with a static cache, or a DynamicCache."
            )


def static_capacity(cache: Any) -> int | None:
    """``max_cache_len`` of a static cache, ``None`` for a dynamic cache (or none)."""
    layers = getattr(cache, "layers", None) if cache is not None else None
    if not layers or _kind(layers[0]) != _STATIC:
        return None
    return int(layers[0].max_cache_len)


def fit_static_layers(cache: Any, first: int, capacity: int) -> None:
    """Size the static layers from ``first`` on to hold ``capacity`` tokens (what a reduced layer can ever hold).

    Called when a prefill enters a stage, before those layers run: a fresh layer then allocates
    ``capacity`` slots at its first write; a layer a previous prompt sized otherwise is re-allocated
    (its contents belong to that prompt). A reduced layer's attention then reads only its own slots,
    and the static cache saves memory like the dynamic one. Layer 0 keeps ``max_cache_len``, so
    transformers' masks and positions are unchanged.
    """
    for layer in cache.layers[first:]:
        if layer.max_cache_len == capacity:
            continue
        layer.max_cache_len = capacity
        if getattr(layer, "is_initialized", False):
            for name in ("keys", "values"):
                old = getattr(layer, name)
                new = old.new_zeros((*old.shape[:2], capacity, old.shape[3]))
                setattr(layer, name, new)
                if not torch.compiler.is_compiling():
                    torch._dynamo.mark_static_address(new)  # as transformers does: CUDA graphs need fixed addresses


def prefill_keys(cache: Any, layer: int, slots: int) -> torch.Tensor | None:
    """The post-rotary keys decoder layer ``layer`` cached in this prefill, when they are exactly its slots.

    ``(B, H_kv, slots, head_dim)`` from a dynamic cache layer that holds ``slots`` tokens:
    the keys the layer's own attention computed (norm, projection, per-head norm, rotation) and
    cached, so a scorer that reads that layer's keys need not compute them again. ``None`` (compute
    them) for a static layer or a layer holding anything else.
    """
    layers = getattr(cache, "layers", None)
    if layers is None or layer >= len(layers) or _kind(layers[layer]) != _DYNAMIC:
        return None
    keys = getattr(layers[layer], "keys", None)
    if not isinstance(keys, torch.Tensor) or keys.dim() != 4 or keys.shape[-2] != slots:
        return None
    return keys
