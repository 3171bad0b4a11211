"""Dense vs. wrapped LLaVA benchmark: a thin runner around ``tokenprune bench``.

Takes the same arguments as ``tokenprune bench`` (see ``--help``) and, unless ``--json`` /
``--plot`` are given, writes ``benchmarks/results/<name>.json`` and ``<name>.png``, where
``<name>`` is ``--name`` or ``<shape>-<strategy>-<device>-<threads>t``.

    OMP_NUM_THREADS=1 python benchmarks/bench_llava.py
    OMP_NUM_THREADS=1 python benchmarks/bench_llava.py --option 'layer_list=[2]' \
        --option 'image_token_ratio_list=[0.5]' --name fastv-schedule
    python benchmarks/bench_llava.py --device cuda --shape llava-1.5-7b      # GPU, bf16, true shape

Pin the thread count (``OMP_NUM_THREADS`` or ``--threads``): on a shared machine, threads that
wait for a busy core distort timings far more than a single thread does.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from tokenprune.tools.cli import main

RESULTS = Path(__file__).resolve().parent / "results"


def _default_name(argv: list[str]) -> str:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--shape", default="llava-1.5-7b")
    parser.add_argument("--strategy", default="pyramiddrop")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    known, _ = parser.parse_known_args(argv)
    threads = known.threads or int(os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads())
    return f"{known.shape}-{known.strategy}-{known.device}-{threads}t"


def run(argv: list[str]) -> int:
    name_parser = argparse.ArgumentParser(add_help=False)
    name_parser.add_argument("--name")
    known, rest = name_parser.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        return main(["bench", *rest])
    name = known.name or _default_name(rest)
    if "--json" not in rest:
        rest += ["--json", str(RESULTS / f"{name}.json")]
    if "--plot" not in rest:
        rest += ["--plot", str(RESULTS / f"{name}.png")]
    return main(["bench", *rest])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
