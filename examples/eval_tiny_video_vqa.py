"""Accuracy vs. visual FLOPs of every temporal strategy and the image strategies on Moving-Shapes.

Loads a model saved by ``examples/train_tiny_video_vqa.py``, evaluates it dense, and every point of
`tokenprune.vqa_video.evaluate.DEFAULT_POINTS` at about 50% and 25% of the dense visual-token FLOPs,
on the fixed test split (``--limit`` questions), and writes JSON and a Markdown table::

    OMP_NUM_THREADS=1 python examples/eval_tiny_video_vqa.py runs/tiny-video-qwen2vl --limit 600 --out docs/results/video-accuracy
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tokenprune.vqa_video import moving_shapes as ms
from tokenprune.vqa_video.evaluate import evaluate, markdown_table, sweep
from tokenprune.vqa_video.model import TinyVideoVQA


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="directory written by train_tiny_video_vqa.py")
    p.add_argument("--limit", type=int, default=600, help="test questions per point (the split has 3000)")
    p.add_argument("--out", default="runs/video-accuracy", help="writes OUT.json and OUT.md")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--single-frame-model", default=None, help="also evaluate this single-frame baseline (on middle frames)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    vqa = TinyVideoVQA.load(args.model)
    test = ms.split("test")
    start = time.time()
    result = sweep(vqa, test, limit=args.limit)
    if args.single_frame_model:
        baseline = TinyVideoVQA.load(args.single_frame_model)
        result["single_frame"] = evaluate(baseline, test, limit=args.limit, single_frame=True)
    result["chance"] = ms.CHANCE
    result["limit"] = args.limit
    result["minutes"] = round((time.time() - start) / 60, 2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(markdown_table(result) + "\n")
    print(markdown_table(result))
    return result


if __name__ == "__main__":
    main()
