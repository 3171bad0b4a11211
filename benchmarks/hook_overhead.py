"""Time inside tokenprune's hooks per prefill: eager vs. compiled selection, next to the dense prefill.

One process, a random-weight LLaVA-1.5-7B shape at 1/32 width by default (the launch-bound CPU proxy:
per-op overheads weigh as kernel launches do on a GPU at 576 visual tokens), three models with the
same weights: dense, wrapped, and wrapped with ``compile_selection()`` (and, for PyramidDrop, "engine
only": its schedule and top-k with a constant scorer, i.e. the hooks minus the attention row the method
recomputes). They run in alternation, the
order reversed every round, so a change in the machine's load hits all three alike; medians. The hook
time is bracketed by timing hooks registered around the engine's own (`tokenprune.tools.clocks.HookClock`,
as ``tokenprune bench`` measures it), minus the same brackets on the dense model.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/hook_overhead.py --rounds 21
    OMP_NUM_THREADS=1 python benchmarks/hook_overhead.py --rounds 21 --option rank_layer=last

Writes ``benchmarks/results/hook-overhead-<shape>[-<strategy>][-<options>].json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import tokenprune
from tokenprune.registry import get_registry
from tokenprune.tools import bench
from tokenprune.tools.arguments import add_strategy_arguments
from tokenprune.tools.clocks import HookClock

RESULTS = Path(__file__).resolve().parent / "results"


class _HookOps(TorchDispatchMode):
    """Counts the operations queued from tokenprune's own code (on a GPU: the kernels the hooks launch)."""

    ROOT = str(Path(tokenprune.__file__).resolve().parent)

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        frame = sys._getframe(1)
        while frame is not None:
            if str(Path(frame.f_code.co_filename).resolve()).startswith(self.ROOT):
                self.count += 1
                break
            frame = frame.f_back
        return func(*args, **(kwargs or {}))


def _hook_ops(model, inputs) -> int:
    """Operations (views included) tokenprune's code dispatches during one prefill."""
    with torch.inference_mode(), _HookOps() as ops:
        model(**inputs, use_cache=True, logits_to_keep=1)
    return ops.count


def _timed(model, inputs) -> tuple[float, float]:
    """(seconds of the forward, seconds inside the hooks) of one prefill."""
    stack = get_registry().adapter_for(model).locate(model)
    groups = {"model": [m for m in (stack.vlm, stack.head) if m is not None], "layers": list(stack.layers)}
    clock = HookClock(groups, "cpu", post=[stack.vlm])
    try:
        with torch.inference_mode():
            start = time.perf_counter()
            model(**inputs, use_cache=True, logits_to_keep=1)
            seconds = time.perf_counter() - start
    finally:
        clock.remove()
    return seconds, clock.total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="llava-1.5-7b")
    parser.add_argument("--scale", type=int, default=32)
    add_strategy_arguments(parser)
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    options = dict(args.option or [])
    torch.set_num_threads(1)
    shape = bench.resolve_shape(args.shape, args.scale)
    inputs = bench.build_inputs(shape)
    dense = bench.build_model(shape).eval()
    models = {"dense": dense, "eager": tokenprune.wrap(copy.deepcopy(dense), args.strategy, **options)}
    models["compiled selection"] = tokenprune.wrap(copy.deepcopy(dense), args.strategy, **options)
    models["compiled selection"].tokenprune.compile_selection()
    # The engine alone: PyramidDrop's schedule and top-k with a scorer that costs nothing, so the hooks
    # do everything but recompute the attention row the method ranks by.
    if args.strategy == "pyramiddrop" and not options:
        models["engine only"] = tokenprune.wrap(copy.deepcopy(dense), scheduler="pyramid", scorer="constant", reducer="topk")
    for model in models.values():  # warm-up (and the compile)
        for _ in range(2):
            _timed(model, inputs)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
    for i in range(args.rounds):
        for name in list(models)[:: 1 if i % 2 == 0 else -1]:
            samples[name].append(_timed(models[name], inputs))
    dense_s = statistics.median(s for s, _ in samples["dense"])
    dense_hooks = statistics.median(h for _, h in samples["dense"])
    result = {"shape": shape.name, "strategy": args.strategy, "options": options, "rounds": args.rounds, "threads": 1,
              "torch": torch.__version__, "dense_prefill_s": dense_s, "modes": {}}  # fmt: skip
    for name in [m for m in models if m != "dense"]:
        hooks = statistics.median(h for _, h in samples[name]) - dense_hooks
        wrapped_s = statistics.median(s for s, _ in samples[name])
        # Compiled code runs its graphs below the dispatch mode's view: count the eager paths only.
        ops = None if name == "compiled selection" else _hook_ops(models[name], inputs)
        result["modes"][name] = {"hook_s": hooks, "share_of_dense_prefill": hooks / dense_s,
                                 "wrapped_prefill_s": wrapped_s, "speedup": dense_s / wrapped_s,
                                 "hook_ops_per_prefill": ops}  # fmt: skip
        print(f"{name:20s} hooks {hooks * 1e3:6.2f} ms = {100 * hooks / dense_s:.2f}% of the dense prefill "
              f"({dense_s * 1e3:.1f} ms); prefill {dense_s / wrapped_s:.2f}x"
              + ("" if ops is None else f"; {ops} operations queued by the hooks"))  # fmt: skip
    suffix = "".join(f"-{k}={v}" for k, v in sorted(options.items()))
    name = shape.name.replace("/", "_") + ("" if args.strategy == "pyramiddrop" else f"-{args.strategy}") + suffix
    path = RESULTS / f"hook-overhead-{name}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
