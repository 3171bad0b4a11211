"""Markdown tables from ``tokenprune bench`` JSON results (the tables of docs/results/cpu.md).

python benchmarks/summarize.py benchmarks/results/*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def summarize(paths: list[str]) -> str:
    runs = [(Path(p).stem, json.loads(Path(p).read_text())) for p in paths]
    head = "| metric | " + " | ".join(f"`{name}`" for name, _ in runs) + " |"
    rule = "|---|" + "---|" * len(runs)
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, fn) -> None:
        cells = []
        for _, r in runs:
            try:
                cells.append(fn(r))
            except (KeyError, TypeError, ZeroDivisionError):
                cells.append("–")
        rows.append((label, cells))

    row("schedule (visual tokens)", lambda r: " → ".join(map(str, [r["shape"]["visual_tokens"], *r["schedule"]["keep"]]))
        + f" before {r['layers']}")  # fmt: skip
    row("torch threads", lambda r: str(r["environment"]["torch_threads"]))
    row(
        "prefill, whole forward: dense / wrapped (s)",
        lambda r: f"{r['prefill']['dense_s']:.2f} / {r['prefill']['wrapped_s']:.2f}",
    )
    row("prefill, whole forward: speedup (pair median)",
        lambda r: f"{_x(r['prefill']['speedup'])} ({_x(r['prefill']['pair_speedup_median'])})")  # fmt: skip
    row("prefill, whole forward: FLOPs-ideal", lambda r: _x(r["prefill"]["ideal_speedup"]))
    row("prefill, whole forward: measured / ideal", lambda r: _pct(r["prefill"]["ratio_to_ideal"]))
    row("prefill, LLM only: dense / wrapped (s)",
        lambda r: f"{r['prefill']['llm_dense_s']:.2f} / {r['prefill']['llm_wrapped_s']:.2f}")  # fmt: skip
    row("prefill, LLM only: speedup (pair median)",
        lambda r: f"{_x(r['prefill']['llm_speedup'])} ({_x(r['prefill']['llm_pair_speedup_median'])})")  # fmt: skip
    row("prefill, LLM only: FLOPs-ideal", lambda r: _x(r["prefill"]["llm_ideal_speedup"]))
    row("prefill, LLM only: measured / ideal", lambda r: _pct(r["prefill"]["llm_ratio_to_ideal"]))
    row("prefill, LLM only: achievable (length scaling)", lambda r: _x(r["length_scaling"]["achievable_speedup"]))
    row("prefill, LLM only: measured / achievable",
        lambda r: _pct(r["prefill"]["llm_speedup"] / r["length_scaling"]["achievable_speedup"]))  # fmt: skip
    row("engine hook time (ms)", lambda r: f"{1e3 * r['overhead']['hook_s']:.1f}")
    row("engine hook time / dense prefill", lambda r: f"{100 * r['overhead']['fraction_of_dense_prefill']:.2f}%")
    row("decode per token: dense / wrapped (ms)",
        lambda r: f"{1e3 * r['decode']['dense_s_per_token']:.1f} / {1e3 * r['decode']['wrapped_s_per_token']:.1f}")  # fmt: skip
    row("decode per token: speedup (pair median) / ideal",
        lambda r: f"{_x(r['decode']['speedup'])} ({_x(r['decode'].get('pair_speedup_median'))}) / "
        f"{_x(r['decode']['ideal_speedup'])}")  # fmt: skip
    row("generate 16 tokens, end to end: speedup", lambda r: _x(r["decode"]["generate_speedup"]))
    row("training step: dense / wrapped (s)", lambda r: f"{r['train']['dense_s']:.2f} / {r['train']['wrapped_s']:.2f}")
    row("training step: speedup (pair median) / ideal",
        lambda r: f"{_x(r['train']['speedup'])} ({_x(r['train']['pair_speedup_median'])}) / "
        f"{_x(r['train']['ideal_speedup'])}")  # fmt: skip
    row("training step: time reduction", lambda r: f"{100 * r['train']['time_reduction']:.1f}%")
    row("KV cache after prefill: dense / wrapped (MiB)",
        lambda r: f"{r['kv_cache_bytes']['dense'] / 2**20:.1f} / {r['kv_cache_bytes']['wrapped'] / 2**20:.1f}")  # fmt: skip
    row("KV cache: measured = cost model", lambda r: str(
        r["kv_cache_bytes"]["dense"] == r["kv_cache_bytes"]["model_dense"]
        and r["kv_cache_bytes"]["wrapped"] == r["kv_cache_bytes"]["model_wrapped"]))  # fmt: skip
    row("peak memory, prefill: dense / wrapped (MiB)",
        lambda r: f"{r['memory']['prefill']['dense_bytes'] / 2**20:.0f} / {r['memory']['prefill']['wrapped_bytes'] / 2**20:.0f}")  # fmt: skip
    row("peak memory, training step w/o grads: dense / wrapped (MiB)", lambda r: (
        f"{(r['memory']['train']['dense_bytes'] - r['memory']['train']['parameter_grad_bytes']) / 2**20:.0f} / "
        f"{(r['memory']['train']['wrapped_bytes'] - r['memory']['train']['parameter_grad_bytes']) / 2**20:.0f}"))  # fmt: skip
    lines = [head, rule] + [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarize(sys.argv[1:]))
