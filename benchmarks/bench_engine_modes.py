"""TTFT, TPOT and end-to-end generate, dense vs. wrapped, in the eager, static-cache and compiled modes.

Writes ``benchmarks/results/<name>.json`` and ``.png`` (``<name>``: ``--name`` or
``modes-<shape>-<device>-<threads>t``) and prints the table. See `tokenprune.tools.bench_modes`.

    OMP_NUM_THREADS=1 python benchmarks/bench_engine_modes.py --scale 32            # the CPU proxy
    python benchmarks/bench_engine_modes.py --device cuda --dtype bfloat16 --new-tokens 64 \
        --shape llava-1.5-7b                                                         # GPU, true shape
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from tokenprune.tools.bench_modes import MODES, plot, render, run_modes

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="llava-1.5-7b")
    parser.add_argument("--scale", type=int, default=None, help="divide widths (default: 4 on CPU, 1 on CUDA)")
    parser.add_argument("--images", type=int, default=None, help="images per prompt (576 visual tokens each)")
    parser.add_argument("--strategy", default="pyramiddrop")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {','.join(MODES)}")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="float32 on CPU, bfloat16 on CUDA by default")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    result = run_modes(
        shape=args.shape, scale=args.scale, strategy=args.strategy, modes=args.modes.split(","),
        device=args.device, dtype=dtype, new_tokens=args.new_tokens, repeats=args.repeats, warmup=args.warmup,
        images=args.images, progress=lambda line: print(f"[bench] {line}", file=sys.stderr, flush=True),
    )  # fmt: skip
    name = args.name or f"modes-{result['shape'].replace('/', '_')}-{args.device}-{torch.get_num_threads()}t"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1))
    plot(result, str(RESULTS / f"{name}.png"))
    print(render(result))
    print(f"written: {RESULTS / name}.json, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
