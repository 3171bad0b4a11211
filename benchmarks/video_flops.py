"""Planned visual FLOPs of video prompts at the true 7B shapes: every temporal strategy at ~50% / ~25%.

For Qwen2.5-VL-7B and LLaVA-OneVision-7B (every temporal strategy, and PyramidDrop), 32 and 128 frames
at 448x448: the visual tokens, the knob
that puts each strategy's paper-convention visual-token FLOPs nearest 50% and 25% of dense, and the
full-convention LLM prefill TFLOPs and FLOPs-ideal speedup (`tokenprune.video_cost`). Analytic: runs in
seconds on any machine. Writes ``benchmarks/results/video_flops.json`` and prints a Markdown table::

    python benchmarks/video_flops.py
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenprune.cost import ModelDims
from tokenprune.registry import get_registry
from tokenprune.video_cost import VideoShape, video_cost, video_grid
from tokenprune.vqa_video.evaluate import Point, solve_knob

POINTS = (
    Point("evs", "ratio", 0.01, 1.0),
    Point("dycoke", "ratio", 0.0, 1.0),
    Point("vidcom2", "ratio", 0.01, 1.0),
    Point("temporal_pyramiddrop", "ratio", 0.05, 1.0, {"temporal": "evs", "temporal_ratio": 0.75}),
    Point("pyramiddrop", "ratio", 0.02, 1.0),
)


def main() -> list[dict]:
    rows = []
    for model in ("qwen2.5-vl-7b", "llava-onevision-7b"):
        dims = ModelDims.preset(model)
        for frames in (32, 128):
            shape = VideoShape(frames, 448, 448)
            grid = video_grid(model, shape)
            for point in POINTS:
                for target in (0.5, 0.25):
                    solved = solve_knob(point, target, dims.num_layers, dims.hidden_size, dims.intermediate_size,
                                        steps=200, grid=grid.grid)  # fmt: skip
                    if solved is None:
                        continue
                    options, fraction = solved
                    cost = video_cost(dims, model, shape, get_registry().build(point.strategy, **options))
                    rows.append({"model": model, "frames": frames, "visual_tokens": grid.tokens, "strategy": point.strategy,
                                 "target": target, "options": options, "paper_fraction": round(fraction, 4),
                                 "llm_visual_tokens": cost["llm_visual_tokens"],
                                 "full_dense_tflops": round(cost["full"]["dense_tflops"], 2),
                                 "full_pruned_tflops": round(cost["full"]["pruned_tflops"], 2),
                                 "ideal_speedup": round(cost["full"]["ideal_speedup"], 2)})  # fmt: skip
    out = Path(__file__).parent / "results" / "video_flops.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print("| model | frames | visual tokens | strategy | target | options | paper FLOPs share | LLM prefill TFLOPs dense → pruned | ideal speedup |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
        print(f"| {r['model']} | {r['frames']} | {r['visual_tokens']} | {r['strategy']} | {r['target']} | {opts} | "
              f"{r['paper_fraction']:.3f} | {r['full_dense_tflops']} → {r['full_pruned_tflops']} | {r['ideal_speedup']}x |")
    return rows


if __name__ == "__main__":
    main()
