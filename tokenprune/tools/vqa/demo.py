"""The trained-model part of ``tokenprune demo``: real questions answered dense and pruned.

The random-weight demo proves the mechanics; this part shows what users care about next, on the
shipped tiny VQA LLaVA: a few test questions with their answers dense and wrapped, accuracy on a
fixed sample of each test split, the FLOPs the wrapped forwards saved, and the kept-patch picture.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ...api import pruned
from ...errors import TokenpruneError
from ..tables import format_table
from .datasets import DATASETS, load_split
from .model import load_tiny_vqa

__all__ = ["run_trained"]

SHOWN = 3
"""Questions printed per dataset."""


def run_trained(strategy: str, options: dict[str, Any], questions: int = 64, picture: str | None = None) -> dict[str, Any]:
    """Accuracy dense vs. wrapped on the first ``questions`` test questions of each set, and a picture.

    Returns a JSON-ready dict; ``{"error": ...}`` when the strategy's options do not fit the 6-layer
    model (e.g. an absolute ``layer_list`` written for a 32-layer LLaVA).
    """
    from .commands import visualize_one

    vqa = load_tiny_vqa()
    result: dict[str, Any] = {"model": "tiny-vqa-llava (shipped)", "questions_per_dataset": questions, "datasets": {}}
    try:
        for name in DATASETS:
            try:
                split = load_split(name, "test").subset(range(questions))
            except ModuleNotFoundError as exc:  # easy-VQA is an optional extra
                result["datasets"][name] = {"skipped": str(exc)}
                continue
            images = split.images[split.image_index]
            dense = vqa.answer(images, split.questions)
            with pruned(vqa.model, strategy, **options) as handle:
                wrapped = vqa.answer(images, split.questions)
                stats = handle.stats
            result["datasets"][name] = {
                "dense_accuracy": sum(a == t for a, t in zip(dense, split.answers)) / len(split),
                "pruned_accuracy": sum(a == t for a, t in zip(wrapped, split.answers)) / len(split),
                "agreement": sum(a == b for a, b in zip(dense, wrapped)) / len(split),
                "flops_saved": stats.flops_saved if stats is not None else 0.0,
                "visual_tokens": [row[0] for row in stats.visual_tokens] if stats is not None else None,
                "examples": [{"question": q, "truth": t, "dense": d, "pruned": w}
                             for q, t, d, w in list(zip(split.questions, split.answers, dense, wrapped))[:SHOWN]],
            }  # fmt: skip
        path = picture or str(Path(tempfile.gettempdir()) / "tokenprune_kept_patches.png")
        ex = load_split("grid-shapes", "test")[0]
        try:
            result["picture"] = visualize_one(vqa, ex.image, ex.question, strategy, options, path, ex.answer)
        except ModuleNotFoundError as exc:  # matplotlib is an optional extra
            result["picture_skipped"] = f"{exc}; pip install matplotlib (or the 'vqa' extra) for the picture"
    except TokenpruneError as exc:
        result["error"] = str(exc)
    return result


def render_trained(r: dict[str, Any], strategy: str) -> str:
    """The trained-model block of the demo report."""
    head = f"Trained model: {r['model']}, {r['questions_per_dataset']} test questions per dataset"
    if "error" in r:
        return f"{head}\n  skipped: {r['error']}"
    rows = [["dataset", "dense acc.", f"{strategy} acc.", "same answer", "visual FLOPs saved"]]
    lines = []
    for name, d in r["datasets"].items():
        if "skipped" in d:
            lines.append(f"  {name} skipped: {d['skipped']}")
            continue
        rows.append([name, f"{100 * d['dense_accuracy']:.1f}%", f"{100 * d['pruned_accuracy']:.1f}%",
                     f"{100 * d['agreement']:.1f}%", f"{100 * d['flops_saved']:.1f}%"])  # fmt: skip
        for ex in d["examples"]:
            lines.append(f"  {ex['question']:<44} truth {ex['truth']:<9} dense {ex['dense']:<9} {strategy} {ex['pruned']}")
    text = f"{head}\n{format_table(rows)}\n\n" + "\n".join(lines)
    if r.get("picture_skipped"):
        text += f"\n\n  kept-patch picture skipped: {r['picture_skipped']}"
    if r.get("picture"):
        p = r["picture"]
        kept = ", ".join(f"{s['kept']}" for s in p["stages"])
        text += f"\n\n  kept-patch picture: {p['path']} (patches kept per stage: {kept} of {p['stages'][0]['total']})"
    return text
