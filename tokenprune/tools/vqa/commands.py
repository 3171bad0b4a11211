"""The ``tokenprune eval``, ``fidelity`` and ``visualize`` subcommands (on the tiny VQA LLaVA).

All three default to the checkpoint shipped in the package (``tokenprune/assets/tiny-vqa-llava``),
so they run offline in seconds to minutes on a CPU; ``--model PATH`` takes any checkpoint saved by
``examples/train_tiny_vqa.py``. For other models use the library functions they wrap:
`tokenprune.tools.vqa.evaluate.sweep`, `tokenprune.tools.fidelity.fidelity`, `tokenprune.tools.visualize.kept_grids`.
``eval --video DIR`` and ``visualize --video DIR`` take a Moving-Shapes video model instead
(`tokenprune.vqa_video`): the video sweep, and the kept tokens of one video as frame strips.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from ..arguments import (
    CliError, add_strategy_arguments, at_least, build_strategy, parse_option, write_json,
)  # fmt: skip
from ..tables import format_table

__all__ = ["add_subcommands", "render_eval", "render_fidelity"]


def _common(parser: argparse.ArgumentParser, dataset_default: str = "all") -> None:
    parser.add_argument("--model", metavar="PATH", help="tiny VQA checkpoint directory (default: the shipped one)")
    parser.add_argument("--dataset", default=dataset_default, choices=["all", "easy-vqa", "grid-shapes"],
                        help=f"test split(s) to use (default: {dataset_default})")  # fmt: skip
    parser.add_argument("--threads", type=at_least(0), default=2, metavar="N",
                        help="torch CPU threads (default: 2; 0 = torch's default)")  # fmt: skip


def add_subcommands(sub: Any) -> None:
    """Register ``eval``, ``fidelity`` and ``visualize`` on the ``tokenprune`` subparsers."""
    ev = sub.add_parser(
        "eval",
        help="accuracy vs. visual FLOPs of dense and every strategy on the trained tiny VQA LLaVA",
        description="Answer the easy-VQA and Grid-Shapes test questions with the shipped tiny LLaVA, dense and with "
        "every registered strategy at each value of its budget option (e.g. pyramiddrop's ratio), batched, with a "
        "progress bar. Prints accuracy and the measured share of dense visual-token FLOPs (paper convention); "
        "--json and --plot write the numbers and the accuracy-vs-FLOPs curves. FLOPs budgets (budget_flops) are "
        "solved on the evaluated model's own depth (--option NAME.reference=llava-1.5-7b restores the default).",
    )
    _common(ev)
    ev.add_argument("--strategy", action="append", metavar="NAME", help="only these strategies (repeatable; default: all)")
    ev.add_argument("--budgets", metavar="LIST", help="comma-separated budget values (default: 0.81,0.64,0.49,0.36,0.25,0.16,0.09)")
    ev.add_argument(
        "--option", action="append", type=parse_option, metavar="STRATEGY.KEY=VALUE",
        help="a fixed option of one strategy in every run of it (repeatable), e.g. sparsevlm.layer_list=[1,2,4] "
        "for a model shallower than the strategy's default layers",
    )  # fmt: skip
    ev.add_argument("--limit", type=at_least(1), metavar="N", help="first N questions of each test split (default: all)")
    ev.add_argument("--batch-size", type=at_least(1), default=64, metavar="B", help="questions per forward (default: 64)")
    ev.add_argument("--json", metavar="PATH", help="write every number to this JSON file")
    ev.add_argument("--plot", metavar="PATH", help="write the accuracy-vs-FLOPs PNG (needs matplotlib)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.add_argument(
        "--video", metavar="DIR", nargs="?", const="shipped",
        help="evaluate the shipped Moving-Shapes video model (tokenprune/assets/tiny-video-qwen2vl), or the one saved "
        "in DIR by examples/train_tiny_video_vqa.py, instead: every temporal "
        "strategy and the image strategies at ~50%% and ~25%% of the visual FLOPs (tokenprune.vqa_video.evaluate)",
    )  # fmt: skip
    ev.set_defaults(func=cmd_eval)

    fid = sub.add_parser(
        "fidelity",
        help="how closely a strategy reproduces dense: next-token KL, top-1 agreement, exact match",
        description="Run greedy generation dense and wrapped on test questions of the tiny VQA LLaVA and compare: "
        "KL(dense || wrapped) of the first answer token, top-1 agreement, exact match of the generated text. "
        "For your own model and prompts use tokenprune.tools.fidelity.fidelity(model, batches, strategy, options).",
    )
    _common(fid, "grid-shapes")
    add_strategy_arguments(fid)
    fid.add_argument("--limit", type=at_least(1), default=128, metavar="N", help="questions per split (default: 128)")
    fid.add_argument("--batch-size", type=at_least(1), default=32, metavar="B", help="questions per batch (default: 32)")
    fid.add_argument("--max-new-tokens", type=at_least(1), default=2, metavar="N", help="greedy tokens (default: 2)")
    fid.add_argument("--json", metavar="PATH", help="write the numbers (with per-sample rows) to this JSON file")
    fid.set_defaults(func=cmd_fidelity)

    vis = sub.add_parser(
        "visualize",
        help="PNG of the image patches (or video tokens, --video) each stage kept, for one question",
        description="Answer one question dense and wrapped, then draw the image once per stage of the reduction "
        "with the dropped patches dimmed (one panel per stage). With --video DIR, a Moving-Shapes test video instead: "
        "one row per stage (the projector's temporal selection, then each LLM stage), one panel per temporal patch.",
    )
    _common(vis, "grid-shapes")
    add_strategy_arguments(vis)
    vis.add_argument("--index", type=at_least(0), default=0, metavar="I", help="test question index (default: 0)")
    vis.add_argument("--image", metavar="PNG", help="your own image instead (resized to 60x60)")
    vis.add_argument("--question", help="your own question (with --image, or replacing the test question)")
    vis.add_argument("--out", default="kept_patches.png", metavar="PATH", help="PNG path (default: kept_patches.png)")
    vis.add_argument(
        "--video", metavar="DIR", nargs="?", const="shipped",
        help="the shipped Moving-Shapes video model, or one saved in DIR by examples/train_tiny_video_vqa.py, instead: draw the kept tokens of "
        "test question --index's video as a frame strip per stage (one row per stage, one panel per temporal patch), "
        "e.g. --video DIR --strategy temporal_pyramiddrop --option layer_list=[1,2,3]",
    )  # fmt: skip
    vis.set_defaults(func=cmd_visualize)


def _splits(name: str) -> list:
    from .datasets import DATASETS, load_split

    return [load_split(d, "test") for d in (DATASETS if name == "all" else [name])]


def _load(args: argparse.Namespace):
    from .model import load_tiny_vqa

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return load_tiny_vqa(args.model)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None


def _load_video(args: argparse.Namespace):
    """The Moving-Shapes video model at ``--video DIR``, or the shipped one for a bare ``--video``
    (`tokenprune.vqa_video.model.load_tiny_video_vqa`)."""
    from ...vqa_video.model import load_tiny_video_vqa

    try:
        vqa = load_tiny_video_vqa(None if args.video == "shipped" else args.video)
    except FileNotFoundError:
        raise CliError(f"--video {args.video}: no video model there (a directory written by examples/train_tiny_video_vqa.py).") from None
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    return vqa


# -- eval -------------------------------------------------------------------------------------
def _eval_video(args: argparse.Namespace) -> int:
    """``tokenprune eval --video DIR``: the video sweep on Moving-Shapes' test split."""
    from ...vqa_video import moving_shapes
    from ...vqa_video.evaluate import DEFAULT_POINTS, markdown_table, sweep

    vqa = _load_video(args)
    points = [p for p in DEFAULT_POINTS if not args.strategy or p.strategy in args.strategy]
    result = sweep(vqa, moving_shapes.split("test"), points, limit=args.limit,
                   progress=None if args.no_progress else print)  # fmt: skip
    print(markdown_table(result))
    if args.json:
        write_json(args.json, result)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if getattr(args, "video", None):
        return _eval_video(args)
    from ...registry import get_registry
    from .evaluate import DEFAULT_BUDGETS, sweep

    registry = get_registry()
    for name in args.strategy or []:
        registry.strategy(name)  # unknown names fail here, before the model loads
    try:
        budgets = [float(v) for v in args.budgets.split(",")] if args.budgets else list(DEFAULT_BUDGETS)
    except ValueError:
        raise CliError(f"--budgets must be comma-separated numbers, e.g. 1,0.5,0.25; got {args.budgets!r}.") from None
    fixed: dict[str, dict[str, Any]] = {}
    for key, value in args.option or []:
        name, dot, field = key.partition(".")
        if not dot or not field:
            raise CliError(f"--option needs STRATEGY.KEY=VALUE (e.g. sparsevlm.layer_list=[1,2,4]); got {key!r}.")
        fixed.setdefault(registry.strategy(name).name, {})[field] = value
    vqa = _load(args)
    from .model import ASSET_DIR

    # FLOPs budgets are solved on the evaluated model itself (its depth), not on LLaVA-1.5-7B
    reference = str(args.model or ASSET_DIR)
    result = sweep(vqa, _splits(args.dataset), args.strategy, budgets, args.batch_size, args.limit,
                   show_progress=not args.no_progress, fixed_options=fixed, reference=reference)  # fmt: skip
    result["model"] = str(args.model or "shipped tiny-vqa-llava")
    print(render_eval(result))
    if args.json:
        write_json(args.json, result, indent=1)
        print(f"\nwrote {args.json}")
    if args.plot:
        from .evaluate import plot_sweep

        plot_sweep(result, args.plot)
        print(f"wrote {args.plot}")
    return 0


def render_eval(result: dict[str, Any]) -> str:
    """One table per dataset: strategy, budget, accuracy, FLOPs share, mean visual tokens per layer.

    Under each table, dense accuracy by question kind (colour, shape, yes/no), when the runs carry it.
    """

    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in result["runs"]):
        rows = [["strategy", "budget", "accuracy", "visual FLOPs", "tokens/layer"]]
        for r in (r for r in result["runs"] if r["dataset"] == dataset):
            budget = "-" if r["option"] is None else f"{r['option']}={r['value']:g}"
            tokens = sum(r["visual_tokens"]) / max(len(r["visual_tokens"]), 1)
            rows.append([r["strategy"], budget, f"{100 * r['accuracy']:.2f}%", f"{100 * r['flops_fraction']:.1f}%",
                         f"{tokens:.1f}"])  # fmt: skip
        n = next(r["questions"] for r in result["runs"] if r["dataset"] == dataset)
        out.append(f"{dataset} test ({n} questions)\n{format_table(rows)}")
        dense = next((r for r in result["runs"] if r["dataset"] == dataset and r["strategy"] == "dense"), None)
        if dense is not None and dense.get("by_kind"):
            parts = [f"{k} {100 * v['accuracy']:.1f}% of {v['questions']}" for k, v in dense["by_kind"].items()]
            out[-1] += "\n  dense by question kind: " + ", ".join(parts)
    for s in result.get("skipped", []):
        out.append(f"skipped {s['strategy']} {s['value']}: {s['reason']}")
    return "\n\n".join(out)


# -- fidelity ---------------------------------------------------------------------------------
def cmd_fidelity(args: argparse.Namespace) -> int:
    from ..fidelity import fidelity

    options = dict(args.option or [])
    build_strategy(args.strategy, options)  # invalid options fail here, before the model loads
    vqa = _load(args)
    reports = {}
    for split in _splits(args.dataset):
        n = min(args.limit, len(split))
        batches = (
            vqa.encode(split.images[[split.image_index[i] for i in idx]], [split.questions[i] for i in idx])
            for idx in (range(s, min(s + args.batch_size, n)) for s in range(0, n, args.batch_size))
        )
        batches = ({k: v for k, v in b.items() if k != "position_ids"} for b in batches)
        reports[split.name] = fidelity(vqa.model, batches, args.strategy, options, args.max_new_tokens)
    result = {"strategy": args.strategy, "options": options, "model": str(args.model or "shipped tiny-vqa-llava"),
              "datasets": reports}  # fmt: skip
    print(render_fidelity(result))
    if args.json:
        write_json(args.json, result, indent=1)
        print(f"\nwrote {args.json}")
    return 0


def render_fidelity(result: dict[str, Any]) -> str:
    """The ``tokenprune fidelity`` table, one row per dataset, under a heading naming the run.

    The heading names the strategy, its options and the model; each row gives the samples, mean
    and max KL, top-1 agreement, exact match and FLOPs saved.

    Args:
        result: ``{"strategy", "options", "model", "datasets": {name: report}}``, each report as
            `tokenprune.tools.fidelity.fidelity` returns it.

    Returns:
        Plain text for the terminal (the same numbers ``--json`` writes).
    """

    rows = [["dataset", "samples", "KL (nats)", "max KL", "top-1 agree", "exact match", "FLOPs saved"]]
    for name, r in result["datasets"].items():
        rows.append([name, r["samples"], f"{r['kl']:.4f}", f"{r['kl_max']:.4f}", f"{100 * r['top1_agreement']:.1f}%",
                     f"{100 * r['exact_match']:.1f}%", f"{100 * r['flops_saved']:.1f}%"])  # fmt: skip
    opts = " ".join(f"{k}={v}" for k, v in result["options"].items()) or "(defaults)"
    return f"fidelity of {result['strategy']} {opts} vs. dense ({result['model']})\n{format_table(rows)}"


# -- visualize --------------------------------------------------------------------------------
def cmd_visualize(args: argparse.Namespace) -> int:

    options = dict(args.option or [])
    build_strategy(args.strategy, options)  # invalid options fail here, before the model loads
    if args.video:
        return _visualize_video(args, options)
    if args.image and not args.question:
        raise CliError("--image needs --question (what to ask about the image).")
    vqa = _load(args)
    if args.image:
        from PIL import Image

        from .datasets import image_tensor

        try:
            image = image_tensor(Image.open(args.image))
        except OSError as exc:
            raise CliError(f"Could not read the image {args.image}: {exc}.") from None
        question, truth = args.question, None
    else:
        split = _splits(args.dataset)[0]
        if args.index >= len(split):
            raise CliError(f"--index {args.index} is out of range: {split.name} test has {len(split)} questions.")
        ex = split[args.index]
        image, question, truth = ex.image, args.question or ex.question, None if args.question else ex.answer
    info = visualize_one(vqa, image, question, args.strategy, options, args.out, truth)
    print(f"question: {question}")
    if truth is not None:
        print(f"truth:    {truth}")
    print(f"dense:    {info['dense_answer']}\n{args.strategy}: {info['pruned_answer']}")
    for s in info["stages"]:
        print(f"  layers {s['first_layer']}-{s['last_layer']}: {s['kept']}/{s['total']} patches kept")
    print(f"wrote {args.out}")
    return 0


def visualize_one(vqa, image: torch.Tensor, question: str, strategy: str, options: dict, path: str,
                  truth: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Answer dense and wrapped, draw the kept patches per stage to ``path``; returns answers and stages."""
    from ...api import pruned
    from ..visualize import draw_stages, kept_grids
    from .model import IMAGE_PX, PATCH_PX

    images = image.unsqueeze(0)
    dense = vqa.answer(images, [question])[0]
    with pruned(vqa.model, strategy, **options) as handle:
        answer = vqa.answer(images, [question])[0]
        selection = handle.selection()
    ids = vqa.encode(images, [question])["input_ids"][0]
    side = IMAGE_PX // PATCH_PX
    stages = kept_grids(selection, ids == vqa.image_id, (side, side), vqa.model.config.text_config.num_hidden_layers)
    title = f"{question}  dense: {dense}  {strategy}: {answer}" + (f"  (truth: {truth})" if truth else "")
    draw_stages(image, stages, path, title)
    return {"dense_answer": dense, "pruned_answer": answer, "path": path,
            "stages": [{k: v for k, v in s.items() if k != "mask"} for s in stages]}  # fmt: skip


def _visualize_video(args: argparse.Namespace, options: dict[str, Any]) -> int:
    """``tokenprune visualize --video DIR``: the frame strip of one Moving-Shapes test video."""
    from ...vqa_video import moving_shapes as ms

    if args.image:
        raise CliError("--image draws a still image on the tiny VQA LLaVA, --video a video's frames: give one of them.")
    vqa = _load_video(args)
    test = ms.split("test")
    if args.index >= len(test):
        raise CliError(f"--index {args.index} is out of range: the Moving-Shapes test split has {len(test)} questions.")
    q = test.questions[args.index]
    frames = ms.render(test.videos[test.video_index[args.index]], counter=vqa.counter)  # as the model was trained
    question, truth = args.question or q.text, None if args.question else q.answer
    info = visualize_video_one(vqa, frames, question, args.strategy, options, args.out, truth)
    print(f"question: {question}")
    if truth is not None:
        print(f"truth:    {truth}")
    print(f"dense:    {info['dense_answer']}\n{args.strategy}: {info['pruned_answer']}")
    for s in info["stages"]:
        print(f"  {s['name']}: {s['kept']}/{s['total']} video tokens kept")
    print(f"wrote {args.out}")
    return 0


def visualize_video_one(vqa, frames, question: str, strategy: str, options: dict, path: str,
                        truth: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Answer dense and wrapped, draw the kept tokens of every stage as frame strips to ``path``.

    Returns the answers and, per stage, its name, kept count and ``(frames, rows, cols)`` mask
    (`tokenprune.vqa_video.frame_strips.video_stages`).
    """
    from ...api import pruned
    from ...vqa_video.evaluate import VIDEO_GRID
    from ...vqa_video.frame_strips import draw_strips, video_stages
    from ...vqa_video.model import TEMPORAL_PATCH

    dense = vqa.answer([frames], [question])[0]
    inputs = vqa.encode([frames], [question])
    with pruned(vqa.model, strategy, **options) as handle, torch.no_grad():
        logits = vqa.model(**inputs).logits[:, -1]
        stages = video_stages(handle, inputs["input_ids"], vqa.vocab.id("<|video_pad|>"), VIDEO_GRID)
    answer = vqa.vocab.words[int(logits[0].argmax())]
    title = f"{question}  dense: {dense}  {strategy}: {answer}" + (f"  (truth: {truth})" if truth else "")
    draw_strips(frames, stages, path, title, frames_per_patch=TEMPORAL_PATCH)
    return {"dense_answer": dense, "pruned_answer": answer, "path": path, "stages": stages}
