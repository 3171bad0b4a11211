"""Accuracy against visual FLOPs on Moving-Shapes, for the temporal strategies and the image ones applied to video.

Every point is a strategy with one knob set so that the *planned* share of the dense visual-token
FLOPs (paper convention, `tokenprune.cost.stack_flops` over the LLM's layers, 324 visual tokens per
video) is as close as the knob allows to a target (50% and 25% by default). The plan is analytic
(`planned_fraction`: the projector part's `kept_count` on the video's grid, then the LLM part's
schedule on what it receives); the run reports the *measured* share too, read from the wrapped
forwards (`CallStats` of the LLM part, or the projector's kept counts).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..api import pruned
from ..vision_language import VisionLanguageStrategy
from ..cost import stack_flops
from ..registry import get_registry
from . import moving_shapes as ms
from .model import GRID, MERGE, VISUAL_TOKENS, TinyVideoVQA

__all__ = ["Point", "DEFAULT_POINTS", "planned_fraction", "solve_knob", "evaluate", "sweep", "markdown_table"]

TOLERANCE = 0.13
"""Largest gap between a point's planned FLOPs share and its target (pooling's grids are coarse: 4x4 of 6x6 is 0.375)."""
VIDEO_GRID = (GRID[0], GRID[1] // MERGE, GRID[2] // MERGE)
"""Merged token grid of one video: 9 x 6 x 6."""


@dataclass(frozen=True)
class Point:
    """One curve: a strategy, the knob the sweep sets, its search range and fixed options."""

    strategy: str
    knob: str
    low: float
    high: float
    fixed: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The strategy name with its fixed options, for tables and plots."""
        extra = ",".join(f"{k}={v}" for k, v in self.fixed.items())
        return self.strategy + (f"[{extra}]" if extra else "")


DEFAULT_POINTS = (
    Point("evs", "ratio", 0.02, 1.0),
    Point("dycoke", "ratio", 0.0, 1.0),
    Point("vidcom2", "ratio", 0.02, 1.0),
    Point("temporal_pyramiddrop", "ratio", 0.05, 1.0, {"temporal": "evs", "temporal_ratio": 0.75, "layer_list": [1, 2, 3]}),
    Point("pyramiddrop", "ratio", 0.02, 1.0, {"layer_list": [1, 2, 3]}),
    Point("fastv", "r", 0.0, 0.99, {"k": 1}),
    Point("divprune", "ratio", 0.02, 1.0),
    Point("pooling", "ratio", 0.02, 1.0),
)
"""The curves: temporal strategies, their composition with PyramidDrop, and image strategies on video.
Layers fit the 4-layer tiny model (PyramidDrop's stages after layers 1, 2, 3; FastV after layer 1)."""


def planned_fraction(strategy: Any, layers: int, d: int, m: int, grid: tuple[int, int, int] | None = None) -> float:
    """Planned pruned / dense visual-token FLOPs (paper convention) of one video of merged ``grid``
    (default: a Moving-Shapes video, 9 x 6 x 6)."""
    projector = getattr(strategy, "projector", None)
    llm = strategy.llm if isinstance(strategy, VisionLanguageStrategy) else strategy
    grid = VIDEO_GRID if grid is None else grid
    n = grid[0] * grid[1] * grid[2]
    kept = n if projector is None else projector.kept_count(n, grid)
    per_layer = [kept] * layers if llm is None else [row[0] for row in llm.scheduler.plan(layers, [kept]).tokens_per_layer()]
    return stack_flops(per_layer, d, m) / stack_flops([n] * layers, d, m)


def solve_knob(
    point: Point, target: float, layers: int, d: int, m: int, steps: int = 400, grid: tuple[int, int, int] | None = None
) -> tuple[dict[str, Any], float] | None:
    """Options (the point's fixed ones and its knob) whose planned fraction is closest to ``target``.

    A grid of ``steps`` knob values over ``[low, high]``; values the strategy refuses (a grid that
    cannot be pooled, a ratio out of range) are skipped; ``None`` when none is valid.
    """
    registry = get_registry()
    best = None
    for value in np.linspace(point.low, point.high, steps):
        options = {**point.fixed, point.knob: round(float(value), 4)}
        try:
            strategy = registry.build(point.strategy, **options)
            fraction = planned_fraction(strategy, layers, d, m, grid)
        except Exception:  # noqa: BLE001 - a refused value is simply not a candidate
            continue
        if point.strategy == "pooling" and not _pools(strategy, grid or VIDEO_GRID):
            continue
        if best is None or abs(fraction - target) < abs(best[1] - target):
            best = (options, fraction)
    return best


def _pools(strategy: Any, grid: tuple[int, int, int]) -> bool:
    """Whether the pooling grid fits the video (a square number of cells per frame of a square frame)."""
    frames, rows, cols = grid
    kept = strategy.projector.kept_count(frames * rows * cols, grid)
    per_frame, rest = divmod(kept, frames)
    side = round(per_frame**0.5)
    return rest == 0 and side * side == per_frame and side <= rows


def _measured(model: Any, handle: Any, batch: int) -> tuple[float, float]:
    text = model.config.text_config
    layers, d, m = text.num_hidden_layers, text.hidden_size, text.intermediate_size
    dense = batch * stack_flops([VISUAL_TOKENS] * layers, d, m)
    stats = handle.stats
    if stats is not None:  # the LLM part ran: its per-layer visual tokens of every sample
        per_sample = list(zip(*stats.visual_tokens))
        return sum(stack_flops(list(row), d, m) for row in per_sample), dense
    kept = [k for k in handle.tokens_per_layer()["projector"]]
    return sum(stack_flops([k] * layers, d, m) for k in kept), dense


def evaluate(
    vqa: TinyVideoVQA,
    test: ms.Split,
    strategy: str | None = None,
    options: dict[str, Any] | None = None,
    limit: int | None = None,
    batch: int = 24,
    single_frame: bool = False,
    counter: bool | None = None,
) -> dict[str, Any]:
    """Accuracy per question kind (and overall) and the measured visual-FLOPs share, dense or wrapped.

    ``counter``: render the frames with the step counter (`moving_shapes.render`); ``None`` (default):
    as the model was trained (`TinyVideoVQA.counter`, saved with its checkpoint).
    """
    counter = vqa.counter if counter is None else counter
    n = len(test) if limit is None else min(limit, len(test))
    right, total = defaultdict(int), defaultdict(int)
    flops = dense = 0.0
    steps = [ms.MIDDLE_STEP] * ms.STEPS if single_frame else None
    vqa.model.eval()
    for start in range(0, n, batch):
        idx = range(start, min(start + batch, n))
        frames = [ms.render(test.videos[test.video_index[i]], steps, counter=counter) for i in idx]
        questions = [test.questions[i].text for i in idx]
        if strategy is None:
            answers = vqa.answer(frames, questions)
        else:
            with pruned(vqa.model, strategy, **(options or {})) as handle:
                answers = vqa.answer(frames, questions)
                f, dn = _measured(vqa.model, handle, len(idx))
                flops, dense = flops + f, dense + dn
        for a, i in zip(answers, idx):
            q = test.questions[i]
            total[q.kind] += 1
            right[q.kind] += a == q.answer
    out: dict[str, Any] = {k: right[k] / total[k] for k in ms.KINDS if total[k]}
    out["all"] = sum(right.values()) / max(n, 1)
    out["questions"] = n
    out["flops_fraction"] = flops / dense if dense else 1.0
    return out


def sweep(
    vqa: TinyVideoVQA,
    test: ms.Split,
    points: Sequence[Point] = DEFAULT_POINTS,
    targets: Sequence[float] = (0.5, 0.25),
    limit: int | None = None,
    progress: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Dense plus every point at every target FLOPs share: ``{"runs": [...], "skipped": [...]}``."""
    text = vqa.model.config.text_config
    layers, d, m = text.num_hidden_layers, text.hidden_size, text.intermediate_size
    runs = [{"strategy": "dense", "target": 1.0, "options": {}, "planned_fraction": 1.0, **evaluate(vqa, test, limit=limit)}]
    skipped = []
    if progress:
        progress(f"dense: {runs[0]['all']:.3f}")
    for point in points:
        for target in targets:
            solved = solve_knob(point, target, layers, d, m)
            if solved is None or abs(solved[1] - target) > TOLERANCE:
                skipped.append({"strategy": point.label, "target": target,
                                "reason": f"no knob value comes within {TOLERANCE:.2f} of the target"
                                + ("" if solved is None else f" (closest {solved[1]:.2f})")})  # fmt: skip
                continue
            options, fraction = solved
            result = evaluate(vqa, test, point.strategy, options, limit=limit)
            runs.append({"strategy": point.label, "target": target, "options": options, "planned_fraction": fraction, **result})
            if progress:
                progress(f"{point.label} @ {target}: {options} planned {fraction:.3f} measured {result['flops_fraction']:.3f} "
                         f"acc {result['all']:.3f}")  # fmt: skip
    return {"runs": runs, "skipped": skipped}


def markdown_table(result: dict[str, Any]) -> str:
    """The sweep as a Markdown table (accuracy per kind, FLOPs shares)."""
    head = "| strategy | target | options | planned FLOPs | measured FLOPs | all | " + " | ".join(ms.KINDS) + " |"
    lines = [head, "|" + "---|" * (6 + len(ms.KINDS))]
    for r in result["runs"]:
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
        kinds = " | ".join(f"{100 * r[k]:.1f}" if k in r else "-" for k in ms.KINDS)
        lines.append(f"| {r['strategy']} | {r['target']:.2f} | {opts} | {r['planned_fraction']:.3f} | "
                     f"{r['flops_fraction']:.3f} | {100 * r['all']:.1f} | {kinds} |")  # fmt: skip
    for s in result["skipped"]:
        lines.append(f"| {s['strategy']} | {s['target']:.2f} | skipped: {s['reason']} | | | | " + " | ".join("" for _ in ms.KINDS) + " |")
    return "\n".join(lines)
