"""Analytic cost model.

The paper convention (PyramidDrop Sec. 4.1, following FastV): per decoder layer, prefill, counting
only the ``n`` visual tokens, ``4nd^2 + 2n^2d + 3ndm`` (``d`` hidden size, ``m`` MLP width; the 3
is LLaMA's three-matrix MLP). Summed over layers it reproduces the paper's printed numbers, e.g.
LLaVA-1.5-7B (576 tokens, 32 layers, d=4096, m=11008): 3.82 TFLOPs dense, 1.78 with PyramidDrop.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["layer_flops", "stack_flops"]


def layer_flops(n: float, d: int, m: int) -> float:
    """Paper-convention FLOPs of one decoder layer over ``n`` visual tokens."""
    return 4 * n * d * d + 2 * n * n * d + 3 * n * d * m


def stack_flops(tokens_per_layer: Iterable[float], d: int, m: int) -> float:
    """Paper-convention FLOPs of a stack whose layer ``i`` sees ``tokens_per_layer[i]`` visual tokens."""
    return sum(layer_flops(n, d, m) for n in tokens_per_layer)
