"""Generation benchmark across engine modes: eager, static KV cache, and compiled decode.

What a serving user feels is time to first token (TTFT: the prefill), time per output token (TPOT:
one decode step) and the whole ``generate``. Each is timed dense vs. wrapped on the same random-weight
model, in one process, alternating pairs (wrapped first on odd pairs), medians, next to the
FLOPs-ideal of the schedule (`tokenprune.cost`). Modes:

* ``eager``: ``generate`` with the default DynamicCache.
* ``static``: ``cache_implementation="static"`` (each reduced layer writes at its own offset).
* ``compiled``: static cache plus transformers' auto-compiled decode step
  (``CompileConfig(fullgraph=True)``; CUDA graphs through ``mode="reduce-overhead"`` on a GPU,
  inductor on the CPU). The prefill stays eager in this mode, as in transformers, except that the
  wrapped model's selection step is compiled too (`WrapHandle.compile_selection`).

Used by ``benchmarks/bench_engine_modes.py`` (JSON + plot); the numbers in ``docs/results`` come from it.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..api import pruned, wrap
from ..cost import ModelDims, estimate
from .bench import build_inputs, build_model, resolve_shape
from .bench_common import alternate, timed_generate

__all__ = ["MODES", "generate_kwargs", "run_modes"]

MODES = ("eager", "static", "compiled")
"""The engine modes `run_modes` times, in this order by default."""


def generate_kwargs(mode: str, device: str) -> dict[str, Any]:
    """The ``generate`` keywords of an engine mode."""
    if mode == "eager":
        return {}
    if mode == "static":
        return {"cache_implementation": "static"}
    if mode == "compiled":
        from transformers import CompileConfig

        cuda = device.startswith("cuda")
        config = CompileConfig(fullgraph=True, mode="reduce-overhead" if cuda else None)
        config._compile_all_devices = not cuda  # transformers compiles decode only on accelerators unless asked
        return {"cache_implementation": "static", "compile_config": config}
    raise ValueError(f"Unknown mode {mode!r}; choose from {MODES}.")


def _once(model: nn.Module, inputs: dict, kwargs: dict, new_tokens: int, device: str) -> dict[str, float]:
    run = timed_generate(model, inputs, new_tokens, device, **kwargs)
    return {"ttft": run["first_token_seconds"], "tpot": statistics.median(run["steps"]), "e2e": run["seconds"]}


def _summary(dense: list[dict], wrapped: list[dict], ideal: dict[str, float]) -> dict[str, Any]:
    out = {}
    for metric in ("ttft", "tpot", "e2e"):
        d = statistics.median(s[metric] for s in dense)
        w = statistics.median(s[metric] for s in wrapped)
        pair = statistics.median(a[metric] / b[metric] for a, b in zip(dense, wrapped))
        out[metric] = {"dense_s": d, "wrapped_s": w, "speedup": d / w, "pair_median": pair, "ideal_speedup": ideal[metric]}
    return out


def run_modes(
    shape: str = "llava-1.5-7b",
    scale: int | None = None,
    strategy: str = "pyramiddrop",
    options: dict[str, Any] | None = None,
    modes: Sequence[str] = MODES,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    new_tokens: int = 16,
    repeats: int = 5,
    warmup: int = 1,
    images: int | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Time TTFT, TPOT and end-to-end generate, dense vs. wrapped, in every mode; a JSON-ready dict."""
    options = dict(options or {})
    bench_shape = resolve_shape(shape, scale, device, images=images)
    model = build_model(bench_shape, device=device, dtype=dtype)
    inputs = build_inputs(bench_shape, 1, 0, device)
    inputs = {k: v for k, v in inputs.items() if k != "position_ids"}
    with pruned(model, strategy, **options) as handle:
        schedule = handle.plan([bench_shape.visual_tokens])
    dims = ModelDims.from_config(model.config, name=bench_shape.name)
    cost = estimate(dims, schedule, visual_tokens=bench_shape.visual_tokens, text_tokens=bench_shape.text_tokens,
                    lm_head_tokens=1, new_tokens=new_tokens - 1)  # fmt: skip
    ideal = {
        "ttft": cost.ideal_speedup_with_vision,
        "tpot": cost.ideal_decode_speedup,
        "e2e": (cost.full_dense + cost.vision + cost.decode_dense) / (cost.full_pruned + cost.vision + cost.decode_pruned),
    }
    result: dict[str, Any] = {
        "shape": bench_shape.name, "visual_tokens": bench_shape.visual_tokens, "text_tokens": bench_shape.text_tokens,
        "strategy": strategy, "options": options, "device": device, "dtype": str(dtype).removeprefix("torch."),
        "new_tokens": new_tokens, "repeats": repeats, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "modes": {},
    }  # fmt: skip
    # Two models with the same weights, the second wrapped once: a compiled step is traced per model
    # and never re-traced (wrapping and unwrapping one model between calls would recompile each time).
    dense_model, wrapped_model = model, copy.deepcopy(model)
    wrap(wrapped_model, strategy, **options)
    for mode in modes:
        kwargs = generate_kwargs(mode, device)
        if mode == "compiled":
            wrapped_model.tokenprune.compile_selection()  # the warm-up pairs pay its compile too

        def once(is_wrapped: bool, kwargs: dict = kwargs) -> dict[str, float]:
            return _once(wrapped_model if is_wrapped else dense_model, inputs, kwargs, new_tokens, device)

        dense, wrapped = alternate(mode, once, repeats, warmup + (1 if mode == "compiled" else 0), progress)
        result["modes"][mode] = _summary(dense, wrapped, ideal)
    return result


def render(result: dict[str, Any]) -> str:
    """A plain-text table of a `run_modes` result."""
    lines = [
        f"{result['strategy']} on {result['shape']} ({result['visual_tokens']} visual + {result['text_tokens']} text tokens), "
        f"{result['device']} {result['dtype']}, {result['new_tokens']} new tokens, {result['repeats']} pairs, "
        f"{result['threads']} thread(s)",
        f"{'mode':<9} {'metric':<5} {'dense':>10} {'wrapped':>10} {'speedup':>8} {'pair med.':>9} {'ideal':>6}",
    ]
    for mode, metrics in result["modes"].items():
        for metric, m in metrics.items():
            lines.append(
                f"{mode:<9} {metric:<5} {1e3 * m['dense_s']:>8.1f}ms {1e3 * m['wrapped_s']:>8.1f}ms "
                f"{m['speedup']:>7.2f}x {m['pair_median']:>8.2f}x {m['ideal_speedup']:>5.2f}x"
            )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: str) -> str:
    """Grouped bars: measured speedup (and the FLOPs-ideal) per mode and metric; PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, measured, ideal = [], [], []
    for mode, metrics in result["modes"].items():
        for metric, m in metrics.items():
            labels.append(f"{mode}\n{metric}")
            measured.append(m["pair_median"])
            ideal.append(m["ideal_speedup"])
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels)), 3.6))
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], measured, 0.4, label="measured (pair median)")
    ax.bar([i + 0.2 for i in x], ideal, 0.4, label="FLOPs-ideal", alpha=0.5)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("speedup vs. dense")
    ax.set_title(f"{result['strategy']} on {result['shape']} ({result['device']})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
