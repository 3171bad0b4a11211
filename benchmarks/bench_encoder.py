"""Dense vs. wrapped vision encoder: time a random-weight timm ViT of the true shape.

Timing depends on shapes, not trained weights. Runs dense and wrapped forwards alternately in one
process (pairs), reports medians, the measured speedup and the tokens each block ran on, and
writes ``benchmarks/results/encoder-<model>-<device>-<threads>t.json``.

    OMP_NUM_THREADS=1 python benchmarks/bench_encoder.py                       # ViT-S/16, CPU
    python benchmarks/bench_encoder.py --model vit_base_patch16_224 --device cuda --batch 64

Strategies timed: ToMe (``tome``, r tokens merged before every block) and a [CLS]-attention top-k
drop to ``--keep`` of the patches from block ``--block`` on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import timm
import torch

import tokenprune
from tokenprune import Strategy
from tokenprune.components import QueryAttentionScorer, StageScheduler, TopKDrop

RESULTS = Path(__file__).resolve().parent / "results"


def _time(model, x, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        model(x)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--r", type=int, default=13, help="ToMe: tokens merged before every block")
    parser.add_argument("--block", type=int, default=4, help="[CLS] drop: first block that sees fewer tokens")
    parser.add_argument("--keep", type=float, default=0.5, help="[CLS] drop: share of patches kept")
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = timm.create_model(args.model, pretrained=False).eval().to(args.device, dtype)
    x = torch.randn(args.batch, 3, 224, 224, device=args.device, dtype=dtype)
    strategies = {
        f"tome_r{args.r}": ("tome", {"r": args.r}),
        f"cls_drop_{args.keep}_at_{args.block}": (
            Strategy(StageScheduler([args.block], [args.keep]), QueryAttentionScorer(), TopKDrop(), name="cls_drop"),
            {},
        ),
    }
    results = {}
    for name, (strategy, options) in strategies.items():
        for _ in range(2):  # warm-up both paths
            _time(model, x, args.device)
        dense, wrapped = [], []
        tokenprune.wrap(model, strategy, **options)
        handle = model.tokenprune
        _time(model, x, args.device)
        lengths, saved = handle.stats.sequence_lengths, handle.stats.flops_saved
        tokenprune.unwrap(model)
        for _ in range(args.pairs):
            dense.append(_time(model, x, args.device))
            tokenprune.wrap(model, strategy, **options)
            wrapped.append(_time(model, x, args.device))
            tokenprune.unwrap(model)
        d, w = statistics.median(dense), statistics.median(wrapped)
        results[name] = {
            "dense_s": d, "wrapped_s": w, "speedup": d / w, "flops_saved": saved, "tokens_per_block": lengths,
        }
        print(f"{name:<24} dense {d * 1e3:8.1f} ms  wrapped {w * 1e3:8.1f} ms  speedup {d / w:5.2f}x  "
              f"FLOPs saved {saved:.0%}  tokens/block {lengths}")
    threads = int(os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads())
    out = RESULTS / f"encoder-{args.model}-{args.device}-{threads}t.json"
    RESULTS.mkdir(exist_ok=True)
    meta = {"model": args.model, "batch": args.batch, "device": args.device, "dtype": str(dtype), "threads": threads}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
