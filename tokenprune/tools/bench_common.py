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
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from .. import __version__
from ..api import pruned
from .clocks import StepStreamer, sync

__all__ = [
    "alternate",
    "cache_bytes",
    "dense_or_wrapped",
    "environment",
    "median",
    "parse_dtype",
    "ratio",
    "short",
    "timed_generate",
]  # fmt: skip


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values (a phase that did not run)."""
    return statistics.median(values) if values else math.nan


def ratio(a: float, b: float) -> float:
    """``a / b``, NaN when ``b`` is zero (a speedup of nothing measured)."""
    return a / b if b else math.nan


def short(sample: Any) -> str:
    """A progress line's time: a sample's ``seconds`` (else its end-to-end ``e2e``, or the number itself), 3 decimals."""
    seconds = sample.get("seconds", sample.get("e2e")) if isinstance(sample, dict) else sample
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


# -- the protocol both benchmarks share ------------------------------------------------------
def alternate(
    phase: str, once: Callable[[bool], Any], repeats: int, warmup: int, say: Callable[[str], None]
) -> tuple[list[Any], list[Any]]:
    """Warm-up pairs, then ``repeats`` dense/wrapped pairs in alternation (wrapped first on odd pairs).

    ``once(wrapped)`` times one run. Alternating, and swapping the order every pair, spreads drifts
    of the machine (clocks, other load) over both sides alike.
    """
    for i in range(warmup):
        say(f"{phase}: warm-up {i + 1}/{warmup}")
        once(False)
        once(True)
    dense: list[Any] = []
    wrapped: list[Any] = []
    for i in range(repeats):
        for is_wrapped in (False, True) if i % 2 == 0 else (True, False):
            (wrapped if is_wrapped else dense).append(once(is_wrapped))
        say(f"{phase}: pair {i + 1}/{repeats}  dense {short(dense[-1])}  wrapped {short(wrapped[-1])}")
    return dense, wrapped


@contextmanager
def dense_or_wrapped(
    model: Any, wrapped: bool, strategy: str, options: dict[str, Any], compile_selection: bool = False
) -> Iterator[Any]:
    """Run the block on ``model`` wrapped with ``strategy`` (yielding the handle), or dense (yielding None)."""
    if not wrapped:
        yield None
        return
    with pruned(model, strategy, **options) as handle:
        if compile_selection:
            handle.compile_selection()
        yield handle


def timed_prefill(model: Any, inputs: dict[str, Any], device: str) -> tuple[float, Any]:
    """``(seconds, output)`` of one prefill forward (cache on, last position's logits), synchronised."""
    with torch.inference_mode():
        sync(device)
        start = time.perf_counter()
        out = model(**inputs, use_cache=True, logits_to_keep=1)
        sync(device)
        return time.perf_counter() - start, out


def timed_generate(model: Any, inputs: dict[str, Any], new_tokens: int, device: str, **generate_kwargs: Any) -> dict[str, Any]:
    """One greedy ``generate`` of exactly ``new_tokens``: total seconds, per-step times, time to first token.

    ``generate_kwargs`` go to ``generate`` (an engine mode's cache and compile settings)."""
    streamer = StepStreamer(device)
    with torch.inference_mode():
        sync(device)
        start = time.perf_counter()
        out = model.generate(
            **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, streamer=streamer,
            **generate_kwargs,
        )
        sync(device)
        total = time.perf_counter() - start
    first = streamer.times[1] - start if len(streamer.times) > 1 else math.nan
    return {"seconds": total, "steps": streamer.steps, "first_token_seconds": first,
            "generated": int(out.shape[1] - inputs["input_ids"].shape[1])}  # fmt: skip
