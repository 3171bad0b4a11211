"""Redraw the video accuracy-vs-FLOPs picture of the docs from the sweep's JSON.

Reads the JSON that ``examples/eval_tiny_video_vqa.py`` (or ``tokenprune eval --video DIR --json``) wrote,
by default ``benchmarks/results/video_accuracy.json``, and writes ``docs/results/video-accuracy-vs-flops.png``
(`tokenprune.vqa_video.sweep_plot.plot_video_sweep`). Re-run it after every sweep::

    python benchmarks/video_accuracy_plot.py [--json PATH] [--out PNG]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokenprune.vqa_video.sweep_plot import plot_video_sweep

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "video_accuracy.json"), help="the sweep's JSON")
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "video-accuracy-vs-flops.png"), help="the PNG to write")
    args = p.parse_args(argv)
    path = plot_video_sweep(json.loads(Path(args.json).read_text()), args.out)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
