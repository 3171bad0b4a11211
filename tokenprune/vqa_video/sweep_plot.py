"""Accuracy against visual FLOPs on Moving-Shapes, drawn from a sweep's JSON.

`plot_video_sweep` reads what `tokenprune.vqa_video.evaluate.sweep` returns (and
``examples/eval_tiny_video_vqa.py`` writes): one curve per strategy from dense (share 1.0) through its
~50% and ~25% points, at the *measured* share of the dense visual-token FLOPs, one panel for all
questions and one per question kind, chance dashed. It reads only the JSON, so the picture is
redrawn whenever the sweep is re-run (``python benchmarks/video_accuracy_plot.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_video_sweep", "TEMPORAL"]

TEMPORAL = ("evs", "dycoke", "vidcom2", "temporal_pyramiddrop")
"""Strategies drawn solid (they select across frames); the image strategies applied to video are dashed."""


def _name(label: str) -> str:
    """The strategy name of a sweep label such as ``pyramiddrop[layer_list=[1, 2, 3]]``."""
    return label.split("[", 1)[0]


def plot_video_sweep(result: dict[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Accuracy vs. measured visual-FLOPs share per strategy; PNG at ``path`` (matplotlib Agg).

    Args:
        result: the sweep (``{"runs": [...], "chance": {...}, "limit": N}``); every run has ``strategy``,
            ``flops_fraction``, ``all`` and the per-kind accuracies it measured.
        path: where to write the PNG.
        title: the figure title (default: the questions per point).

    Raises:
        ValueError: the result has no dense run (every curve starts there).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    dense = next((r for r in runs if r["strategy"] == "dense"), None)
    if dense is None:
        raise ValueError("The sweep has no dense run; every curve starts at dense accuracy.")
    kinds = [k for k in ("direction", "appear", "count", "order") if k in dense]
    panels = ["all", *kinds]
    curves: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        if r["strategy"] != "dense":
            curves.setdefault(_name(r["strategy"]), []).append(r)
    chance = result.get("chance", {})
    fig, axes = plt.subplots(1, len(panels), figsize=(3.1 * len(panels), 3.6), sharex=True, squeeze=False)
    colours = plt.get_cmap("tab10").colors
    for ax, kind in zip(axes[0], panels):
        for i, (name, points) in enumerate(curves.items()):
            points = sorted(points, key=lambda r: -r["flops_fraction"])
            xs = [1.0] + [r["flops_fraction"] for r in points]
            ys = [100 * dense[kind]] + [100 * r[kind] for r in points]
            ax.plot(xs, ys, marker="o", markersize=3.5, linewidth=1.3, color=colours[i % len(colours)],
                    linestyle="-" if name in TEMPORAL else "--", label=name)  # fmt: skip
        ax.scatter([1.0], [100 * dense[kind]], marker="*", s=90, color="black", zorder=5, label="dense")
        if kind in chance:
            ax.axhline(100 * chance[kind], color="grey", linewidth=0.8, linestyle=":", label="chance")
        ax.set_title("all questions" if kind == "all" else kind, fontsize=9)
        ax.set_xlabel("visual-token FLOPs (share of dense)", fontsize=8)
        ax.set_xlim(1.05, 0.1)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("accuracy (%)", fontsize=8)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 10), fontsize=7, frameon=False)
    questions = dense.get("questions")
    fig.suptitle(title or f"Moving-Shapes test ({questions} questions per point): accuracy vs. measured visual FLOPs; "
                 "solid: temporal strategies, dashed: image strategies on video", fontsize=9)  # fmt: skip
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
