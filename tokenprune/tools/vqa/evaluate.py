"""Accuracy against visual FLOPs: dense and every registered strategy over a grid of budgets.

The sweep is generic over the registry: for each strategy it varies the option that sets its
budget (`budget_option`), so a strategy another package registers shows up with no change here.
The x-axis is *measured*, not promised: the share of the dense paper-convention visual-token FLOPs
(`tokenprune.cost.stack_flops`, summed over layers) that the wrapped forwards really ran, read from
the handle's `CallStats`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any


from ...api import pruned
from ...errors import TokenpruneError
from ...registry import get_registry
from .datasets import QUESTION_KINDS, Split, question_kind
from .model import TinyVQA

__all__ = ["BUDGET_OPTION_NAMES", "DEFAULT_BUDGETS", "budget_option", "evaluate_split", "sweep", "plot_sweep",
           "at_flops", "markdown_table", "summary_table"]  # fmt: skip

BUDGET_OPTION_NAMES = ("budget_flops", "ratio", "keep_ratio", "retain_ratio", "keep", "budget")
"""Config fields tried, in order, as a strategy's budget knob (after an explicit ``budget_option``).

``budget_flops`` first: every LLM-side strategy accepts the common FLOPs budget and solves for its
own parameters, so the sweep compares them at equal promised FLOPs; the projector-side ones (and
ToMe) take the share of patches kept, ``ratio``."""
DEFAULT_BUDGETS = (0.81, 0.64, 0.49, 0.36, 0.25, 0.16, 0.09)
"""Values of the budget option swept by default: squares of tenths, so that the spatial baselines
(``pooling``, ``downsample``) keep a square grid of the tiny model's 10x10 patches (9x9 ... 3x3).
Values a strategy refuses are skipped and listed; 1.0, keep everything, is left out: the exactness
contract makes it equal to dense."""


def budget_option(strategy: str) -> str | None:
    """The config field that sets ``strategy``'s budget, or ``None`` when it has none.

    A strategy config may name it with a class attribute ``budget_option``; otherwise the first field
    among `BUDGET_OPTION_NAMES`, then the first float field whose name contains "ratio".
    """
    cls = get_registry().strategy(strategy).config_cls
    explicit = getattr(cls, "budget_option", None)
    if isinstance(explicit, str):
        return explicit
    fields = cls.model_fields
    for name in BUDGET_OPTION_NAMES:
        if name in fields:
            return name
    for name, info in fields.items():
        if "ratio" in name and "float" in str(info.annotation) and "list" not in str(info.annotation):
            return name
    return None


def _batches(n: int, size: int) -> Iterable[range]:
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


def evaluate_split(
    vqa: TinyVQA,
    split: Split,
    strategy: str | None = None,
    options: dict[str, Any] | None = None,
    batch_size: int = 64,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Accuracy of ``vqa`` on ``split`` (first ``limit`` questions), dense or wrapped with ``strategy``.

    Returns:
        ``accuracy``, ``correct``, ``questions``, and ``flops_fraction``: pruned / dense visual-token
        FLOPs (paper convention) summed over every forward (1.0 for dense), ``visual_tokens``: the
        mean visual tokens per layer, ``by_kind``: ``{kind: {"accuracy", "correct", "questions"}}``
        per `tokenprune.tools.vqa.datasets.question_kind` (colour, shape, yes/no).
    """
    n = len(split) if limit is None else min(limit, len(split))
    correct, flops, dense, per_layer = 0, 0.0, 0.0, None
    kinds: dict[str, list[int]] = {}
    for idx in _batches(n, batch_size):
        images = split.images[[split.image_index[i] for i in idx]]
        questions = [split.questions[i] for i in idx]
        if strategy is None:
            answers = vqa.answer(images, questions)
            stats = None
        else:
            with pruned(vqa.model, strategy, **(options or {})) as handle:
                answers = vqa.answer(images, questions)
                stats = _llm_visual_flops(vqa.model, handle, len(idx))
        correct += sum(a == split.answers[i] for a, i in zip(answers, idx))
        for a, i in zip(answers, idx):
            tally = kinds.setdefault(question_kind(split.answers[i]), [0, 0])
            tally[0] += a == split.answers[i]
            tally[1] += 1
        if stats is not None:
            flops += stats[0]
            dense += stats[1]
            rows = stats[2]
            per_layer = rows if per_layer is None else [a + b for a, b in zip(per_layer, rows)]
        if progress is not None:
            progress(len(idx))
    layers = vqa.model.config.text_config.num_hidden_layers
    n_visual = vqa.model.config.image_seq_length
    return {
        "accuracy": correct / max(n, 1), "correct": correct, "questions": n,
        "flops_fraction": flops / dense if dense else 1.0,
        "visual_tokens": [v / n for v in per_layer] if per_layer else [float(n_visual)] * layers,
        "by_kind": {k: {"accuracy": kinds[k][0] / kinds[k][1], "correct": kinds[k][0], "questions": kinds[k][1]}
                    for k in QUESTION_KINDS if k in kinds},
    }  # fmt: skip


def _llm_visual_flops(model: Any, handle: Any, batch: int) -> tuple[float, float, list[float]]:
    """``(pruned, dense, tokens per layer summed over the batch)``: the LLM's visual-token FLOPs of the last forward.

    LLM-side strategies report them in `CallStats`. Strategies that reduce before the LLM (in the
    vision tower or at the projector) hand it fewer visual tokens, which then stay in every layer:
    the same paper-convention count, from the tokens each image reached the LLM with.
    """
    from ...cost import stack_flops

    stats = handle.stats
    if stats is not None:
        return sum(stats.flops), sum(stats.dense_flops), [float(sum(r)) for r in stats.visual_tokens]
    text = model.config.text_config
    layers, d, m = text.num_hidden_layers, text.hidden_size, text.intermediate_size
    n_visual = model.config.image_seq_length
    projector = handle.tokens_per_layer().get("projector") or [n_visual]
    kept = projector[0]  # one image per question, every image reduced to the same count
    return (
        batch * stack_flops([kept] * layers, d, m), batch * stack_flops([n_visual] * layers, d, m),
        [float(batch * kept)] * layers,
    )  # fmt: skip


def sweep(
    vqa: TinyVQA,
    splits: Sequence[Split],
    strategies: Sequence[str] | None = None,
    budgets: Sequence[float] = DEFAULT_BUDGETS,
    batch_size: int = 64,
    limit: int | None = None,
    show_progress: bool = True,
    fixed_options: dict[str, dict[str, Any]] | None = None,
    reference: str | None = None,
) -> dict[str, Any]:
    """Dense plus every strategy (default: all registered) at every budget, on every split.

    ``fixed_options`` adds options to every run of a strategy (by name), e.g. layers that fit a
    shallow model: ``{"sparsevlm": {"layer_list": [1, 2, 4]}}``.

    ``reference`` (a local model path, or a preset) is the model a ``budget`` / ``budget_flops`` is
    solved on, for every strategy that takes a ``reference`` option; pass the evaluated model's own
    path so the promised FLOPs share holds on it (``tokenprune eval`` does). ``None`` keeps each
    strategy's default (LLaVA-1.5-7B). A ``reference`` in ``fixed_options`` wins.

    Returns:
        ``{"runs": [{dataset, strategy, option, value, options, accuracy, flops_fraction, ...}],
        "skipped": [{strategy, value, reason}]}``. Dense runs have ``strategy`` ``"dense"``.
    """
    from pydantic import ValidationError
    from tqdm.auto import tqdm

    registry = get_registry()
    names = list(strategies) if strategies is not None else sorted(registry.strategies)
    plan: list[tuple[str, str | None, float | None]] = [("dense", None, None)]
    skipped: list[dict[str, Any]] = []
    fixed_options = dict(fixed_options or {})
    for name in names:
        option = budget_option(name)
        if option is None:
            skipped.append({"strategy": name, "value": None, "reason": "no budget option found"})
            plan.append((name, None, None))
            continue
        if reference is not None and option in ("budget", "budget_flops"):
            if "reference" in registry.strategy(name).config_cls.model_fields:
                fixed_options[name] = {"reference": reference, **fixed_options.get(name, {})}
        for value in budgets:
            try:
                registry.build(name, **{**fixed_options.get(name, {}), option: value})
            except (ValidationError, ValueError) as exc:
                skipped.append({"strategy": name, "value": value, "reason": str(exc).splitlines()[0]})
                continue
            plan.append((name, option, value))
    total = sum(len(s) if limit is None else min(limit, len(s)) for s in splits) * len(plan)
    runs: list[dict[str, Any]] = []
    with tqdm(total=total, unit="q", disable=not show_progress, desc="eval") as bar:
        for split in splits:
            for name, option, value in plan:
                options = {**fixed_options.get(name, {}), **({} if option is None else {option: value})}
                bar.set_postfix_str(f"{split.name} {name} {option or ''}={'' if value is None else value}")
                try:
                    result = evaluate_split(vqa, split, None if name == "dense" else name, options, batch_size, limit,
                                            bar.update)  # fmt: skip
                except TokenpruneError as exc:  # e.g. a budget whose kept count is not a square grid
                    skipped.append({"strategy": name, "value": value, "reason": str(exc).splitlines()[0]})
                    continue
                runs.append({"dataset": split.name, "strategy": name, "option": option, "value": value,
                             "options": options, **result})  # fmt: skip
    return {"runs": runs, "skipped": skipped}


def at_flops(runs: Sequence[dict[str, Any]], dataset: str, strategy: str, target: float) -> dict[str, Any] | None:
    """The run of ``strategy`` on ``dataset`` whose FLOPs fraction is closest to ``target``."""
    rows = [r for r in runs if r["dataset"] == dataset and r["strategy"] == strategy]
    return min(rows, key=lambda r: abs(r["flops_fraction"] - target)) if rows else None


def plot_sweep(result: dict[str, Any], path: str, title: str = "Tiny VQA LLaVA") -> None:
    """One panel per dataset: accuracy against the visual-FLOPs fraction, one curve per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    datasets = list(dict.fromkeys(r["dataset"] for r in runs))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4.0), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        rows = [r for r in runs if r["dataset"] == dataset]
        dense = next((r for r in rows if r["strategy"] == "dense"), None)
        if dense is not None:
            ax.axhline(100 * dense["accuracy"], color="gray", ls="--", lw=1, label=f"dense ({100 * dense['accuracy']:.1f}%)")
        palette = plt.get_cmap("tab20").colors  # 20 distinct colours; markers tell apart what repeats
        markers = "osD^vP*X<>"
        names = list(dict.fromkeys(r["strategy"] for r in rows if r["strategy"] != "dense"))
        for i, name in enumerate(names):
            pts = sorted((r["flops_fraction"], r["accuracy"]) for r in rows if r["strategy"] == name)
            ax.plot([100 * x for x, _ in pts], [100 * y for _, y in pts], marker=markers[i % len(markers)], ms=4,
                    color=palette[(2 * i) % 20 + (i // 10) % 2], label=name)  # fmt: skip
        n = rows[0]["questions"]
        ax.set(title=f"{dataset} (test, {n} questions)", xlabel="visual-token FLOPs, % of dense (paper convention)",
               ylabel="accuracy (%)", xlim=(0, 102), ylim=(0, 100))  # fmt: skip
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_table(result: dict[str, Any]) -> str:
    """The sweep as a Markdown table (one row per budget, one accuracy column per dataset)."""
    runs = result["runs"]
    datasets = list(dict.fromkeys(r["dataset"] for r in runs))
    keys = list(dict.fromkeys((r["strategy"], r["option"], r["value"]) for r in runs))
    head = "| strategy | budget | " + " | ".join(f"{d}: accuracy | {d}: visual FLOPs" for d in datasets) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(datasets))]
    for name, option, value in keys:
        cells = [name, "-" if option is None else f"{option}={value:g}"]
        for d in datasets:
            r = next((r for r in runs if r["dataset"] == d and (r["strategy"], r["option"], r["value"]) == (name, option, value)), None)
            cells += ["", ""] if r is None else [f"{100 * r['accuracy']:.1f}%", f"{100 * r['flops_fraction']:.1f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_table(result: dict[str, Any], targets: Sequence[float] = (0.5, 0.25)) -> str:
    """Markdown: dense, then each strategy's run closest to each FLOPs share in ``targets`` (`at_flops`).

    A cell reads ``accuracy (measured share)``; the share is given because the budget grid only
    approximates the target.
    """
    runs = result["runs"]
    datasets = list(dict.fromkeys(r["dataset"] for r in runs))
    head = ["strategy", *(f"{d} @ ~{100 * t:.0f}%" for d in datasets for t in targets)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    dense = {r["dataset"]: r for r in runs if r["strategy"] == "dense"}
    cells = []
    for d in datasets:
        cells += [f"{100 * dense[d]['accuracy']:.1f}% (100%)" if d in dense else ""] + [""] * (len(targets) - 1)
    lines.append("| dense | " + " | ".join(cells) + " |")
    for name in sorted({r["strategy"] for r in runs} - {"dense"}):
        cells = []
        for d in datasets:
            for t in targets:
                r = at_flops(runs, d, name, t)
                cells.append("" if r is None else f"{100 * r['accuracy']:.1f}% ({100 * r['flops_fraction']:.0f}%)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
