"""Measured TTFT and TPOT of video prompts, dense vs. every temporal strategy and PyramidDrop, at equal planned FLOPs.

For one video-family shape (default Qwen2.5-VL-7B at 1/8 width, its full depth and vision tower) and one
video (default 16 frames at 336x336: an 8 x 12 x 12 grid, 1,152 visual tokens), each strategy's knob is
set so that its planned paper-convention visual-token FLOPs come nearest ``--target`` of dense (on the
model as built; `tokenprune.vqa_video.evaluate.solve_knob`), then `tokenprune.tools.bench_video.run_video`
times it against dense with the benchmark's protocol (warm-up pair, alternating pairs, medians). Writes
OUT.json (every run), OUT.md (the table) and OUT.png (measured vs. FLOPs-ideal speedups)::

    OMP_NUM_THREADS=1 python benchmarks/bench_video.py --out benchmarks/results/video-bench-qwen2.5-vl-7b-s8-1t

Each strategy is one ``tokenprune bench --video`` run; the CLI runs a single strategy at chosen options.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tokenprune.tools.bench import stderr_progress
from tokenprune.tools.bench_video import run_video
from tokenprune.tools.video_models import resolve_video_shape
from tokenprune.vqa_video.evaluate import Point, solve_knob

POINTS = (
    Point("evs", "ratio", 0.02, 1.0),
    Point("dycoke", "ratio", 0.0, 1.0),
    Point("vidcom2", "ratio", 0.02, 1.0),
    Point("temporal_pyramiddrop", "ratio", 0.05, 1.0, {"temporal": "evs", "temporal_ratio": 0.75}),
    Point("pyramiddrop", "ratio", 0.02, 1.0),
)
"""The curves of `benchmarks/video_flops.py`: the temporal strategies, their composition, PyramidDrop."""


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", default="qwen2.5-vl-7b", help="qwen2-vl-7b, qwen2.5-vl-7b or llava-onevision-7b")
    p.add_argument("--video", default="16x336x336", help="FRAMESxHEIGHTxWIDTH[xTEMPORAL_PATCH] (default 16x336x336)")
    p.add_argument("--scale", type=int, default=8, help="width divisor (default 8)")
    p.add_argument("--target", type=float, default=0.5, help="planned share of the dense visual FLOPs (default 0.5)")
    p.add_argument("--strategies", help="comma-separated subset of evs,dycoke,vidcom2,temporal_pyramiddrop,pyramiddrop")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/video-bench", help="writes OUT.json, OUT.md and OUT.png")
    args = p.parse_args(argv)
    shape = resolve_video_shape(args.shape, args.video, args.scale)
    wanted = set(args.strategies.split(",")) if args.strategies else None
    points = [pt for pt in POINTS if wanted is None or pt.strategy in wanted]
    start = time.time()
    runs = []
    for point in points:
        solved = solve_knob(point, args.target, shape.layers, shape.hidden, shape.intermediate, steps=200, grid=shape.grid)
        if solved is None:
            print(f"skipped {point.strategy}: no valid knob value")
            continue
        options, planned = solved
        stderr_progress(f"{point.strategy} {options} (planned visual FLOPs {planned:.3f})")
        result = run_video(point.strategy, options, shape=shape, repeats=args.repeats, warmup=args.warmup,
                           new_tokens=args.new_tokens, threads=args.threads, progress=stderr_progress)  # fmt: skip
        result["planned_fraction"] = planned
        runs.append(result)
    out = {"command": "python benchmarks/bench_video.py " + " ".join(argv or []), "target": args.target,
           "minutes": round((time.time() - start) / 60, 1), "runs": runs}  # fmt: skip
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{path}.json").write_text(json.dumps(out, indent=1) + "\n")  # not with_suffix: names hold dots (qwen2.5)
    table = markdown_table(out)
    Path(f"{path}.md").write_text(table + "\n")
    plot(out, Path(f"{path}.png"))
    print(table)
    return out


def markdown_table(out: dict) -> str:
    """One row per strategy: options, visual tokens the LLM gets, TTFT / LLM prefill / TPOT speedups beside their ideals."""
    lines = [
        ("| strategy | options | planned visual FLOPs | LLM visual tokens (avg/layer) | TTFT dense → wrapped | TTFT speedup (ideal) "
         "| LLM prefill speedup (ideal) | TPOT dense → wrapped | TPOT speedup (ideal) |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out["runs"]:
        p, d, f = r["prefill"], r.get("decode"), r["flops"]
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
        tpot = (f"{1e3 * d['dense_s_per_token']:.1f} → {1e3 * d['wrapped_s_per_token']:.1f} ms",
                f"{d['speedup']:.2f}x ({d['ideal_speedup']:.2f}x)") if d else ("-", "-")  # fmt: skip
        lines.append(
            f"| {r['strategy']} | {opts} | {r['planned_fraction']:.3f} | {f['llm_visual_tokens']} ({f['avg_visual_tokens']:.0f}) "
            f"| {p['dense_s']:.2f} → {p['wrapped_s']:.2f} s | {p['speedup']:.2f}x ({p['ideal_speedup']:.2f}x) "
            f"| {p['llm_speedup']:.2f}x ({p['llm_ideal_speedup']:.2f}x) | {tpot[0]} | {tpot[1]} |"
        )
    return "\n".join(lines)


def plot(out: dict, path: Path) -> None:
    """Grouped bars per strategy: measured and FLOPs-ideal speedups of TTFT, LLM prefill and TPOT."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = out["runs"]
    if not runs:
        return
    metrics = [("TTFT", "prefill", "speedup", "ideal_speedup"), ("LLM prefill", "prefill", "llm_speedup", "llm_ideal_speedup"),
               ("TPOT", "decode", "speedup", "ideal_speedup")]  # fmt: skip
    metrics = [m for m in metrics if all(m[1] in r for r in runs)]
    fig, ax = plt.subplots(figsize=(1.9 * len(runs) + 2, 4.4))
    width = 0.8 / (2 * len(metrics))
    colours = ["#3f51b5", "#009688", "#e65100"]
    for j, (label, phase, measured, ideal) in enumerate(metrics):
        for k, (key, alpha, suffix) in enumerate(((measured, 1.0, "measured"), (ideal, 0.35, "FLOPs-ideal"))):
            xs = [i - 0.4 + width * (2 * j + k + 0.5) for i in range(len(runs))]
            values = [r[phase][key] for r in runs]
            bars = ax.bar(xs, values, width, color=colours[j], alpha=alpha, label=f"{label} {suffix}")
            for bar, value in zip(bars, values):
                ax.annotate(f"{value:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                            va="bottom", fontsize=6, xytext=(0, 1), textcoords="offset points")  # fmt: skip
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(runs)))
    ax.set_xticklabels([r["strategy"] for r in runs], fontsize=8)
    ax.set_ylabel("dense / wrapped (higher is better)")
    sh, env = runs[0]["shape"], runs[0]["environment"]
    v = sh["video"]
    ax.set_title(f"{sh['name']} ({sh['layers']} layers, d={sh['hidden']}), video {v['frames']}x{v['height']}x{v['width']} = "
                 f"{sh['visual_tokens']} visual tokens, ~{out['target']:.0%} planned visual FLOPs; {env['device']}, "
                 f"{env['torch_threads']} thread(s)", fontsize=8)  # fmt: skip
    ax.legend(fontsize=7, ncol=len(metrics))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
