"""The few transformers 5.x spellings that changed within the supported range.

transformers 5.24 renamed the cache argument and output field ``past_key_values`` to ``cache``
(the old name is accepted with a deprecation warning until 5.40). Forward pre-hooks see the
keyword exactly as the caller wrote it, before transformers renames it, so both spellings can
arrive: ``generate`` in 5.24+ passes ``cache=``, user code written for 5.23 passes
``past_key_values=``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["CACHE_KWARGS", "cache_from_kwargs", "cache_from_output"]

CACHE_KWARGS = ("cache", "past_key_values")
"""Keyword names under which a forward call may carry its KV cache, newest first."""


def cache_from_kwargs(kwargs: dict[str, Any]) -> Any:
    """The KV cache a forward call was given, under either spelling (``None`` if none)."""
    for name in CACHE_KWARGS:
        cache = kwargs.get(name)
        if cache is not None:
            return cache
    return None


def cache_from_output(output: Mapping[str, Any]) -> Any:
    """The KV cache a model output carries (``None`` if none), without the deprecated attribute's warning."""
    for name in CACHE_KWARGS:
        cache = output.get(name)
        if cache is not None:
            return cache
    return None
