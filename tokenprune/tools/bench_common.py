"""What the image and the video benchmarks report alike: statistics, the machine, the dtype, the KV cache.

`tokenprune.tools.bench` (LLaVA image prompts) and `tokenprune.tools.bench_video` (video prompts) time
different models with the same protocol; these helpers make their JSON read the same (medians, ratios,
the ``environment`` block, KV-cache bytes measured from the real cache).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Sequence
from typing import Any

import torch

from .. import __version__

__all__ = ["median", "ratio", "short", "environment", "parse_dtype", "cache_bytes"]


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values (a phase that did not run)."""
    return statistics.median(values) if values else math.nan


def ratio(a: float, b: float) -> float:
    """``a / b``, NaN when ``b`` is zero (a speedup of nothing measured)."""
    return a / b if b else math.nan


def short(sample: Any) -> str:
    """A progress line's time: a sample's ``seconds`` (or the number itself) in seconds, 3 decimals."""
    seconds = sample["seconds"] if isinstance(sample, dict) else sample
    return f"{seconds:.3f}s"


def environment(device: str) -> dict[str, Any]:
    """Versions, platform, CPU model, thread settings (and the GPU's name on CUDA) for a result's JSON."""
    import transformers

    env: dict[str, Any] = {
        "tokenprune": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "device": device,
    }  # fmt: skip
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        env["cpu"] = names[0] if names else platform.processor()
    except OSError:
        env["cpu"] = platform.processor()
    if str(device).startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def parse_dtype(name: str | None, device: str) -> torch.dtype:
    """A torch dtype by name (``float32``/``fp32``, ``bfloat16``/``bf16``, ``float16``/``fp16``); ``None``:
    float32 on CPU, bfloat16 elsewhere. Raises ``ValueError`` for an unknown name."""
    if name is None:
        return torch.float32 if str(device).startswith("cpu") else torch.bfloat16
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}  # fmt: skip
    if name not in table:
        raise ValueError(f"Unknown dtype {name!r}; use one of {', '.join(table)}.")
    return table[name]


def cache_bytes(cache: Any) -> tuple[int, list[int]]:
    """Total bytes of the keys and values a transformers cache holds, and positions per layer."""
    layers = getattr(cache, "layers", None)
    pairs: list[tuple[Any, Any]]
    if layers is not None:
        pairs = [(getattr(layer, "keys", None), getattr(layer, "values", None)) for layer in layers]
    else:  # older caches
        pairs = list(zip(cache.key_cache, cache.value_cache))
    total, lengths = 0, []
    for keys, values in pairs:
        for t in (keys, values):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
        lengths.append(int(keys.shape[-2]) if isinstance(keys, torch.Tensor) and keys.dim() >= 2 else 0)
    return total, lengths
