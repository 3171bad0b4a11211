"""Opt-in: the selection step of every reduction layer through ``torch.compile``.

Why. In eager mode one reduction is about sixty small operations (the layer's norm and key
projection, the rotary embedding, softmax, two stable sorts, the slot layout, the gathers). Where
each operation costs a launch rather than arithmetic (a GPU at LLaVA-1.5's 576 visual tokens, or
the CPU proxy at 1/32 width) that overhead, not the recomputed key projection, is most of what the
hooks cost. Compiled, the same step is a handful of fused kernels.

How. `engine.boundary.reduce_boundary` (query slots, candidates, the shared `select` step, the next
stage's positions and rotary rows) is compiled once per process and option set, with dynamic shapes, so
one graph serves every reduction layer, batch size and prompt length (the layer's weights are graph
inputs, not constants). The first prefill pays the compile (seconds on a CPU); a strategy whose
reducer reads counts back (``Reducer.exact_count`` False) still works, with a graph break there.

What changes. The kept tokens are the same as in eager mode unless two scores tie to within the
compiled kernels' rounding (fused softmax and reductions may round differently in the last bit);
tests compare both on the exactness layouts. Nothing else of the model is compiled: compile the
language model or use generate's compiled decode for that (`docs/concepts.md`, engine modes).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from .boundary import Boundary, reduce_boundary

__all__ = ["compiled_boundary"]


@functools.lru_cache(maxsize=None)
def compiled_boundary(backend: str = "inductor", mode: str | None = None) -> Callable[..., Boundary]:
    """`reduce_boundary` compiled with dynamic shapes; one compiled function per ``(backend, mode)`` per process.

    Cached so that every wrap (and every re-wrap, as the benchmark does per run) shares one dynamo
    cache entry instead of compiling again and running into dynamo's recompile limit.
    """
    options: dict[str, Any] = {"dynamic": True, "backend": backend}
    if mode is not None:
        options["mode"] = mode
    return torch.compile(reduce_boundary, **options)
