"""The ``tokenprune`` command: ``list`` what is installed, run the ``demo``, cost a schedule
(``flops``) and measure it (``bench``).

Plain-text output only (aligned tables, no colour library), so it reads the same in a terminal,
a CI log and a bug report. Usage errors (a bad option value, an unknown strategy) print one
paragraph and exit with status 2, never a traceback: the message is the documentation.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..composite import runs_in_llm_only
from ..errors import TokenpruneError
from ..registry import get_registry

__all__ = ["main", "build_parser", "parse_option", "format_table", "flops_report", "render_flops", "render_bench"]

DISTRIBUTION = "tokenprune-vlm"
USAGE_ERROR = 2


class CliError(Exception):
    """A user error whose message is ready to print (exit status 2)."""


# -- small helpers ----------------------------------------------------------------------------
def parse_option(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as JSON when it parses (``[2,4,6]``, ``0.3``, ``true``), else a string.

    JSON keeps lists and numbers typed without a per-strategy parser; bare words such as
    ``positions=compact`` stay strings, so users need no quoting for the common cases.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value (e.g. ratio=0.3 or layer_list=[2,4,6]), got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def format_table(rows: Sequence[Sequence[Any]], header_rows: int = 1, indent: str = "  ") -> str:
    """Align columns: numbers right, text left, a rule under the header rows.

    Hand-rolled so the CLI has no dependency beyond the library's own.
    """
    cells = [[_cell(v) for v in row] for row in rows]
    width = max(len(row) for row in cells)
    cells = [row + [""] * (width - len(row)) for row in cells]
    sizes = [max(len(row[i]) for row in cells) for i in range(width)]
    numeric = [all(_is_number(row[i]) for row in cells[header_rows:] if row[i]) for i in range(width)]
    lines = [_join(row, sizes, numeric, indent) for row in cells]
    if header_rows:
        titled = [any(row[i] for row in cells[:header_rows]) for i in range(width)]
        rule = "  ".join(("-" if t else " ") * s for s, t in zip(sizes, titled))
        lines.insert(header_rows, (indent + rule).rstrip())
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:,.1f}" if isinstance(value, float) else str(value)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", "").rstrip("%x"))
    except ValueError:
        return False
    return True


def _join(row: Sequence[str], sizes: Sequence[int], numeric: Sequence[bool], indent: str) -> str:
    parts = [c.rjust(s) if num else c.ljust(s) for c, s, num in zip(row, sizes, numeric)]
    return (indent + "  ".join(parts)).rstrip()


def _source(source: str) -> str:
    """Mark entries of this distribution as built-in; third-party ones show their package."""
    return f"{source} (built-in)" if source.split(" ")[0] == DISTRIBUTION else source


def build_strategy(strategy: str, options: dict[str, Any]) -> Any:
    """``get_registry().build(strategy, **options)``, with invalid options as one `CliError` paragraph."""
    from pydantic import ValidationError

    try:
        return get_registry().build(strategy, **options)
    except ValidationError as exc:
        raise CliError(_validation_message(exc, strategy)) from None


def _validation_message(exc: Any, strategy: str) -> str:
    """One paragraph from a pydantic ValidationError: each bad option, why, and the valid names."""
    problems = []
    for err in exc.errors():
        msg = str(err["msg"]).removeprefix("Value error, ").rstrip(".")
        loc = ".".join(str(part) for part in err.get("loc", ()))
        problems.append(f"{loc}={json.dumps(err['input'], default=str)}: {msg}" if loc else msg)
    spec = get_registry().strategy(strategy)
    valid = ", ".join(spec.config_cls.model_fields)
    return f"Invalid options for strategy {spec.name!r}: {'; '.join(problems)}. Valid options: {valid}."


# -- list -------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    """Print every registered strategy, component and adapter with the package it came from and its options."""
    registry = get_registry()
    strategies = [["name", "aliases", "source", "options", "description"]] + [
        [s.name, ", ".join(s.aliases) or "-", _source(s.source), _fields(s.config_cls), s.description or "-"]
        for s in sorted(registry.strategies.values(), key=lambda s: s.name)
    ]
    components = [["kind", "name", "sites", "source", "options", "description"]] + [
        [c.kind, c.name, ",".join(sorted(c.sites())), _source(c.source), _fields(c.config_cls), c.description or "-"]
        for kind in registry.components
        for c in sorted(registry.components[kind].values(), key=lambda c: c.name)
    ]
    adapters = [["name", "model types", "source"]] + [
        [a.name, ", ".join(a.adapter.model_types), _source(a.source)]
        for a in sorted(registry.adapters.values(), key=lambda a: a.name)
    ]
    counts = [
        _plural(len(strategies) - 1, "strategy", "strategies"),
        _plural(len(components) - 1, "component", "components"),
        _plural(len(adapters) - 1, "adapter", "adapters"),
        _plural(len(registry.encoder_adapters), "vision-encoder adapter", "vision-encoder adapters"),
    ]
    print(f"tokenprune {__version__}: {', '.join(counts)}\n")
    print(f"Strategies\n{format_table(strategies)}\n")
    print("Components (compose them: tokenprune.wrap(model, scheduler=..., scorer=..., reducer=..., **options))")
    print(f"{format_table(components)}\n\nAdapters\n{format_table(adapters)}")
    encoders = [["name", "handles", "source"]] + [
        [a.name, a.adapter.description or "-", _source(a.source)]
        for a in sorted(registry.encoder_adapters.values(), key=lambda a: a.name)
    ]
    if len(encoders) > 1:
        print(f"\nVision-encoder adapters\n{format_table(encoders)}")
    return 0


def _fields(config_cls: Any) -> str:
    """A config class's option names, or '-' when it has none."""
    return ", ".join(config_cls.model_fields) or "-"


# -- demo -------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo, print the report, optionally write the numbers as JSON."""
    from pydantic import ValidationError

    from . import demo

    options = dict(args.option or [])
    try:
        result = demo.run(args.strategy, options, args.max_new_tokens, args.repeats, args.seed, args.threads or None,
                          args.questions, args.picture)
    except ValidationError as exc:
        raise CliError(_validation_message(exc, args.strategy)) from None
    print(render_demo(result))
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        except OSError as exc:
            raise CliError(f"Could not write the JSON report to {args.json}: {exc.strerror or exc}.") from None
        print(f"\nwrote {args.json}")
    return 0


def render_demo(result: dict[str, Any]) -> str:
    """The whole demo report: header, then one block per measurement."""
    sections = [_header(result), _tokens_section(result), _flops_section(result)]
    sections += [_timing_section(result), _generation_section(result)]
    if "trained" in result:
        from .vqa.demo import render_trained

        sections.append(render_trained(result["trained"], result["strategy"]))
    return "\n\n".join(sections)


def _header(r: dict[str, Any]) -> str:
    m, opts = r["model"], r["options"]
    shown = " ".join(f"{k}={json.dumps(v)}" for k, v in opts.items()) or "default options"
    return (
        f"tokenprune {r['versions']['tokenprune']} demo: {r['strategy']} on a tiny random-weight {m['class']}\n"
        f"  model     {m['layers']} layers, hidden {m['hidden']}, {m['heads']} heads / {m['kv_heads']} KV heads, "
        f"MLP {m['intermediate']}, {m['dtype']}, {m['attention']}, {m['weights']}\n"
        f"  batch     {m['batch']} prompts, {m['padding']}-padded to {m['sequence_length']} tokens, "
        f"{r['visual_tokens']['dense'][0][0]} visual tokens each (one 336x336 image)\n"
        f"  strategy  {r['strategy']} ({shown}): tokens drop before layers {_layers(r['layers'])}"
    )


def _layers(layers: Sequence[int]) -> str:
    return ", ".join(map(str, layers)) or "(none)"


def _tokens_section(r: dict[str, Any]) -> str:
    dense, pruned = r["visual_tokens"]["dense"], r["visual_tokens"]["pruned"]
    digits = len(str(max(max(row) for row in dense)))
    rows: list[list[Any]] = [["layer", "dense", r["strategy"]]]
    for i, (d, p) in enumerate(zip(dense, pruned)):
        note = "<- reduced from this layer on" if i in r["layers"] else ""
        rows.append([i, _per_sample(d, digits), _per_sample(p, digits), note])
    samples = " / ".join(str(b) for b in range(len(dense[0])))
    return f"Visual tokens per decoder layer (samples {samples})\n" + format_table(rows)


def _per_sample(counts: Sequence[int], digits: int) -> str:
    """One cell for a batch: equal-width numbers, so the column lines up sample by sample."""
    return " / ".join(str(n).rjust(digits) for n in counts)


def _plural(n: int, word: str, plural: str) -> str:
    return f"{n} {word if n == 1 else plural}"


def _flops_section(r: dict[str, Any]) -> str:
    demo, big = r["flops_demo"], r["flops_llava_1_5_7b"]
    rows = [
        ["model", "layers", "drop before", "dense", r["strategy"], "saved"],
        [f"this demo model (batch of {r['model']['batch']})", r["model"]["layers"], _layers(r["layers"]),
         f"{demo['dense'] / 1e9:.2f} GFLOPs", f"{demo['pruned'] / 1e9:.2f} GFLOPs", f"{demo['saved_percent']:.1f}%"],
        [f"{big['model']} (1 image)", big["num_layers"], _layers(big["layers"]),
         f"{big['dense_tflops']:.2f} TFLOPs", f"{big['pruned_tflops']:.2f} TFLOPs", f"{big['saved_percent']:.1f}%"],
    ]  # fmt: skip
    title = "Visual-token prefill FLOPs (paper convention: sum over layers of 4nd^2 + 2n^2d + 3ndm)"
    note = (
        f"  ({big['model']} row: the same schedule resolved on its {big['num_layers']} layers, "
        f"d={big['hidden']}, m={big['intermediate']}, {big['visual_tokens']} visual tokens)"
    )
    return f"{title}\n{format_table(rows)}\n{note}"


def _timing_section(r: dict[str, Any]) -> str:
    t = r["prefill_seconds"]
    rows = [
        ["run", "prefill"],
        ["dense", f"{t['dense'] * 1e3:.1f} ms"],
        [r["strategy"], f"{t['wrapped'] * 1e3:.1f} ms", f"({t['dense'] / t['wrapped']:.2f}x)"],
    ]
    title = (
        f"Prefill wall time, median of {t['repeats']} runs: tiny random model on CPU "
        f"({_plural(r['threads'], 'thread', 'threads')}), an illustration, not a benchmark"
    )
    return f"{title}\n{format_table(rows)}"


def _generation_section(r: dict[str, Any]) -> str:
    g = r["generation"]
    runs = [("dense", g["dense"]), ("keep-all (ratio=1.0)", g["keep_all"]), (r["strategy"], g["pruned"])]
    rows = [["run", *[f"sample {b} new ids" for b in range(len(g["dense"]))]]]
    rows += [[name, *(" ".join(map(str, ids)) for ids in batch)] for name, batch in runs]
    lines = [f"Greedy generation, {g['max_new_tokens']} new tokens", format_table(rows), ""]
    lines.append(f"keep-all generation == dense generation: {g['keep_all_equals_dense']}")
    lines.append(
        f"{r['strategy']} generation == dense generation: {g['pruned_equals_dense']} "
        "(may differ: random weights, fewer visual tokens)"
    )
    if not g["pruned_reduced"]:
        lines.append(f"WARNING: the wrapped generate() did not reduce visual tokens (prefill stats: "
                     f"{g['pruned_visual_tokens_last_layer']}); its ids are the dense model's.")  # fmt: skip
    return "\n".join(lines)


# -- flops ------------------------------------------------------------------------------------
def load_dims(model: str) -> tuple[Any, str]:
    """`ModelDims` of a preset name, or of a local ``config.json`` (file or directory), and where they came from.

    Local paths are read with ``AutoConfig.from_pretrained(..., local_files_only=True)``: nothing is
    downloaded (`tokenprune.cost.ModelDims.load`).
    """
    from ..cost import PRESETS, ModelDims

    try:
        dims = ModelDims.load(model)
    except ValueError as exc:
        raise CliError(f"--model: {exc}") from None
    return dims, "preset" if model.lower() in PRESETS else str(Path(model).expanduser())


def flops_report(
    model: str,
    strategy: str = "pyramiddrop",
    options: dict[str, Any] | None = None,
    visual_tokens: int | None = None,
    text_tokens: int | None = None,
    new_tokens: int = 0,
    kv_dtype: str = "bfloat16",
) -> dict[str, Any]:
    """Everything ``tokenprune flops`` prints, as JSON-ready data.

    The schedule is the strategy's own: ``get_registry().build(strategy, **options).scheduler.plan(num_layers, [N])``.
    """
    from ..cost import estimate

    dims, source = load_dims(model)
    n = visual_tokens if visual_tokens is not None else dims.visual_tokens
    if n is None:
        raise CliError(f"{model} has no default visual-token count; give --visual-tokens N.")
    options = dict(options or {})
    built = build_strategy(strategy, options)
    if not runs_in_llm_only(built):
        raise CliError(
            f"{strategy!r} reduces tokens in the vision encoder or at the projector, not in the LLM; `tokenprune flops` costs "
            "LLM-side schedules only (the cost model has no encoder-side term yet). Use an LLM-side strategy "
            "(`tokenprune list`)."
        )
    schedule = built.scheduler.plan(dims.num_layers, [n])
    try:
        cost = estimate(
            dims, schedule, visual_tokens=n, text_tokens=text_tokens, new_tokens=new_tokens, kv_dtype=kv_dtype
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    data = cost.to_dict()
    data.update(strategy=built.name, options=options, source=source, keep=[row[0] for row in schedule.keep])
    return data


def cmd_flops(args: argparse.Namespace) -> int:
    """Print the cost table (or the JSON) of a strategy's schedule on a model shape."""
    data = flops_report(
        args.model, args.strategy, dict(args.option or []), args.visual_tokens, args.text_tokens,
        args.new_tokens, args.kv_dtype,
    )  # fmt: skip
    if args.json == "-":
        print(json.dumps(data, indent=2))
        return 0
    print(render_flops(data))
    if args.json:
        _write_json(args.json, data)
    return 0


def _write_json(path: str, data: dict[str, Any]) -> None:
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2) + "\n")
    except OSError as exc:
        raise CliError(f"Could not write the JSON report to {path}: {exc.strerror or exc}.") from None
    print(f"\nwrote {path}")


def _bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _speedup(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def render_flops(d: dict[str, Any]) -> str:
    """The ``tokenprune flops`` report: shape, per-stage table, totals in both conventions."""
    dims, s = d["dims"], d["strategy"]
    opts = " ".join(f"{k}={json.dumps(v)}" for k, v in d["options"].items()) or "default options"
    gqa = f"{dims['num_heads']} heads / {dims['num_kv_heads']} KV heads x {dims['head_dim']}"
    vocab = f", vocab {dims['vocab_size']}" if dims["vocab_size"] else ""
    counts = " -> ".join(str(v) for v in [d["visual_tokens"], *d["keep"]])
    header = (
        f"tokenprune flops: {s} on {d['model']} ({d['source']})\n"
        f"  model     {dims['num_layers']} layers, hidden {dims['hidden_size']}, MLP {dims['intermediate_size']}, {gqa}{vocab}\n"
        f"  prompt    {d['visual_tokens']} visual + {d['text_tokens']} text tokens; {d['new_tokens']} new tokens; "
        f"KV cache in {d['kv_cache_bytes']['dtype']}\n"
        f"  strategy  {s} ({opts}): tokens drop before layers {_layers(d['layers'])}; visual tokens {counts}"
    )
    stage_rows: list[list[Any]] = [["layers", "visual tokens", "all tokens", "paper TFLOPs", "full TFLOPs"]]
    for st in d["stages"]:
        span = f"{st['first_layer']}-{st['last_layer']}" if st["layers"] > 1 else str(st["first_layer"])
        stage_rows.append(
            [span, st["visual_tokens"], st["tokens"], f"{st['paper_tflops']:.3f}", f"{st['full_tflops']:.3f}"]
        )
    stages = (
        f"Stages (layers that hold the same tokens)\n{format_table(stage_rows)}\n"
        f"  average visual tokens per layer: {d['avg_visual_tokens']:.1f} (dense {d['visual_tokens']})"
    )
    full, vis, dec, kv = d["full"], d["with_vision"], d["decode"], d["kv_cache_bytes"]
    paper_speedup = d["dense_tflops"] / d["pruned_tflops"] if d["pruned_tflops"] else None
    head = "last position" if full["lm_head_tokens"] == 1 else f"{full['lm_head_tokens']} positions"
    rows: list[list[Any]] = [["convention", "dense", s, "saving", "ideal speedup"]]
    rows.append(["paper: prefill, visual tokens only", f"{d['dense_tflops']:.2f}", f"{d['pruned_tflops']:.2f}",
                 f"{100 * d['saving']:.1f}%", _speedup(paper_speedup)])  # fmt: skip
    rows.append([f"full: LLM prefill, all tokens, LM head on the {head}", f"{full['dense_tflops']:.2f}",
                 f"{full['pruned_tflops']:.2f}", f"{100 * full['saving']:.1f}%", _speedup(full["ideal_speedup"])])  # fmt: skip
    if d["vision_tflops"]:
        rows.append(["full + vision encoder and projector", f"{vis['dense_tflops']:.2f}", f"{vis['pruned_tflops']:.2f}",
                     f"{100 * vis['saving']:.1f}%", _speedup(vis["ideal_speedup"])])  # fmt: skip
    if d["new_tokens"]:
        rows.append([f"full: decode, {d['new_tokens']} new tokens", f"{dec['dense_tflops']:.4f}",
                     f"{dec['pruned_tflops']:.4f}", f"{100 * dec['saving']:.1f}%", _speedup(dec["ideal_speedup"])])  # fmt: skip
    totals = "TFLOPs (1e12 multiply-accumulates, as the papers count; x2 for hardware FLOPs)\n" + format_table(rows)
    notes = (
        "  paper: sum over layers of 4nd^2 + 2n^2d + 3ndm, n = visual tokens (PyramidDrop Sec. 4.1).\n"
        "  full: q/k/v/o projections at their real widths, QK^T and AV over all keys, the MLP, for text and visual tokens."
    )
    when = "after prefill" + (f" and {d['new_tokens']} new tokens" if d["new_tokens"] else "")
    cache = (
        f"KV cache ({kv['dtype']}, batch 1) {when}: {_bytes(kv['dense'])} dense, {_bytes(kv['pruned'])} with {s} "
        f"({100 * kv['saving']:.1f}% less)"
    )
    return "\n\n".join([header, stages, totals + "\n" + notes, cache])


# -- bench ------------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> int:
    """Run the measured benchmark, print the table, write JSON and the plot."""
    from pydantic import ValidationError

    from . import bench

    options = dict(args.option or [])
    try:
        result = bench.run(
            args.strategy, options, shape=args.shape, scale=args.scale, device=args.device, dtype=args.dtype,
            repeats=args.repeats, warmup=args.warmup, new_tokens=args.new_tokens, batch=args.batch,
            threads=args.threads or None, seed=args.seed, train=not args.no_train, memory=not args.no_memory,
            scaling=args.length_scaling,
            progress=None if args.quiet else bench.stderr_progress,
            layers=args.layers, hidden=args.hidden, intermediate=args.intermediate, heads=args.heads,
            kv_heads=args.kv_heads, images=args.images, text_tokens=args.text_tokens, answer_tokens=args.answer_tokens,
        )  # fmt: skip
    except ValidationError as exc:
        raise CliError(_validation_message(exc, args.strategy)) from None
    except (ValueError, RuntimeError) as exc:
        if isinstance(exc, TokenpruneError):
            raise
        raise CliError(str(exc)) from None
    if args.json == "-":
        print(json.dumps(result, indent=2))
    else:
        print(render_bench(result))
        if args.json:
            _write_json(args.json, result)
    if args.plot:
        try:
            path = bench.plot(result, args.plot)
        except RuntimeError as exc:
            raise CliError(str(exc)) from None
        print(f"wrote {path}", file=sys.stderr if args.json == "-" else sys.stdout)
    return 0


def render_bench(r: dict[str, Any]) -> str:
    """The ``tokenprune bench`` report."""
    sh, env, p = r["shape"], r["environment"], r["prefill"]
    opts = " ".join(f"{k}={json.dumps(v)}" for k, v in r["options"].items()) or "default options"
    header = (
        f"tokenprune bench: {r['strategy']} ({opts}) on a random-weight {sh['class']} '{sh['name']}'\n"
        f"  model     {sh['layers']} layers, hidden {sh['hidden']}, MLP {sh['intermediate']}, {sh['heads']} heads / "
        f"{sh['kv_heads']} KV heads, vision {sh['vision_layers']} x {sh['vision_hidden']}, {sh['parameters'] / 1e6:.0f}M "
        f"parameters, {sh['dtype']}, {sh['attention']}\n"
        f"  prompt    batch {sh['batch']} x ({sh['visual_tokens']} visual + {sh['text_tokens']} text tokens), "
        f"training adds {sh['answer_tokens']} answer tokens\n"
        f"  schedule  drop before layers {_layers(r['layers'])}: visual tokens "
        f"{' -> '.join(str(v) for v in [sh['visual_tokens'], *r['schedule']['keep']])} "
        f"(avg {r['schedule']['avg_visual_tokens']:.1f})\n"
        f"  machine   {env['device']}: {env.get('gpu') or env.get('cpu')}, {env['cpu_count']} CPUs, "
        f"{_plural(env['torch_threads'], 'torch thread', 'torch threads')} "
        f"(OMP_NUM_THREADS={env['OMP_NUM_THREADS']}); torch {env['torch']}, transformers {env['transformers']}\n"
        f"  protocol  {r['protocol']['warmup_pairs']} warm-up pair(s), then {r['protocol']['repeats']} alternating "
        "dense/wrapped pairs per phase; medians"
    )
    rows: list[list[Any]] = [["metric", "dense", "wrapped", "speedup", "pair median", "FLOPs-ideal", "of ideal"]]

    def timed(name: str, dense: float, wrapped: float, speedup: float, pair: float | None, ideal: float) -> None:
        rows.append([name, _ms(dense), _ms(wrapped), _speedup(speedup), _speedup(pair), _speedup(ideal),
                     f"{100 * speedup / ideal:.0f}%"])  # fmt: skip

    timed("prefill, whole forward", p["dense_s"], p["wrapped_s"], p["speedup"], p.get("pair_speedup_median"),
          p["ideal_speedup"])  # fmt: skip
    timed("prefill, language model only", p["llm_dense_s"], p["llm_wrapped_s"], p["llm_speedup"],
          p.get("llm_pair_speedup_median"), p["llm_ideal_speedup"])  # fmt: skip
    if "decode" in r:
        d = r["decode"]
        timed(f"decode, per token ({d['new_tokens']} new)", d["dense_s_per_token"], d["wrapped_s_per_token"],
              d["speedup"], d.get("pair_speedup_median"), d["ideal_speedup"])  # fmt: skip
    if "train" in r:
        t = r["train"]
        timed("training step (fwd + bwd)", t["dense_s"], t["wrapped_s"], t["speedup"], t.get("pair_speedup_median"),
              t["ideal_speedup"])  # fmt: skip
    kv = r["kv_cache_bytes"]
    rows.append(["KV cache after prefill", _bytes(kv["dense"]), _bytes(kv["wrapped"]), _speedup(kv["ratio"]), "-",
                 _speedup(kv["model_ratio"]), f"{100 * kv['ratio'] / kv['model_ratio']:.0f}%"])  # fmt: skip
    for phase, mem in r.get("memory", {}).items():
        if isinstance(mem, dict) and mem.get("dense_bytes"):
            rows.append([f"peak memory, {phase}", _bytes(mem["dense_bytes"]), _bytes(mem["wrapped_bytes"]),
                         _speedup(mem["ratio"]), "-", "-", "-"])  # fmt: skip
            grads = mem.get("parameter_grad_bytes")
            if grads:
                rows.append([f"  without parameter grads ({_bytes(grads)})", _bytes(mem["dense_bytes"] - grads),
                             _bytes(mem["wrapped_bytes"] - grads), _speedup(mem["activation_ratio"]), "-", "-", "-"])  # fmt: skip
    o = r["overhead"]
    overhead = (
        f"Engine overhead (time inside tokenprune's hooks, wrapped prefill): {_ms(o['hook_s'])} = "
        f"{100 * o['fraction_of_dense_prefill']:.2f}% of the dense prefill "
        f"({100 * o['fraction_of_dense_llm_prefill']:.2f}% of the dense language-model prefill); "
        f"reduction layers {_ms(o['by_group_s'].get('reduction_layers', 0.0))}"
    )
    title = "Dense vs. wrapped (speedup = dense / wrapped; FLOPs-ideal from tokenprune.cost, full convention)"
    lines = [header, "", title, format_table(rows), "", overhead]
    if "length_scaling" in r:
        ls = r["length_scaling"]
        per_token = ", ".join(f"{n}: {1e3 * t:.3g} ms" for n, t in ls["seconds_per_token"].items())
        lines.append(
            f"Length scaling (dense language model alone, time per token at each stage length: {per_token}): "
            f"achievable LLM prefill speedup {ls['achievable_speedup']:.2f}x; measured "
            f"{p['llm_speedup']:.2f}x = {100 * p['llm_speedup'] / ls['achievable_speedup']:.0f}% of it"
        )
    if "train" in r:
        lines.append(f"Training step time reduced by {100 * r['train']['time_reduction']:.1f}%")
    return "\n".join(lines)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


# -- entry point ------------------------------------------------------------------------------
def _at_least(minimum: int):
    """An argparse type: an integer >= ``minimum`` (a clear usage error instead of a torch traceback)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The ``tokenprune`` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(prog="tokenprune", description="Visual-token reduction for VLMs.")
    parser.add_argument("--version", action="version", version=f"tokenprune {__version__} ({DISTRIBUTION})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = sub.add_parser("list", help="strategies and adapters, and the package each came from")
    listing.set_defaults(func=cmd_list)
    demo = sub.add_parser(
        "demo",
        help="a strategy on a tiny random LLaVA: tokens, FLOPs, time, exactness",
        description="Build a tiny random-weight LLaVA-1.5 (8 layers, 576 visual tokens per image) from config "
        "objects and compare dense vs. wrapped: visual tokens per layer, paper-convention FLOPs (also for the "
        "real LLaVA-1.5-7B shape), prefill time on CPU, and greedy generation, including the check that a "
        "keep-everything schedule generates exactly the dense ids. Runs in seconds, needs no download.",
    )
    demo.add_argument("--strategy", default="pyramiddrop", help="registered name or alias (default: pyramiddrop)")
    demo.add_argument(
        "--option", action="append", type=parse_option, metavar="KEY=VALUE",
        help="strategy option, value read as JSON when possible (repeatable), e.g. ratio=0.3",
    )  # fmt: skip
    demo.add_argument("--max-new-tokens", type=_at_least(1), default=8, metavar="N", help="greedy tokens (default: 8)")
    demo.add_argument("--repeats", type=_at_least(1), default=5, metavar="N", help="timed prefills each (default: 5)")
    demo.add_argument("--seed", type=int, default=0, help="weights, prompts and pixels (default: 0)")
    demo.add_argument(
        "--threads", type=_at_least(0), default=1, metavar="N",
        help="torch CPU threads (default: 1, robust on busy machines; 0 = torch's default)",
    )  # fmt: skip
    demo.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    demo.add_argument("--questions", type=_at_least(0), default=64, metavar="N",
                      help="test questions per dataset for the trained tiny VQA LLaVA part (default: 64; 0 skips it)")  # fmt: skip
    demo.add_argument("--picture", metavar="PATH", help="kept-patch PNG path (default: in the temp folder)")
    demo.set_defaults(func=cmd_demo)
    _add_flops(sub)
    _add_bench(sub)
    from .vqa.commands import add_subcommands  # eval, fidelity, visualize on the trained tiny VQA LLaVA

    add_subcommands(sub)
    return parser


def _strategy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strategy", default="pyramiddrop", help="registered name or alias (default: pyramiddrop)")
    parser.add_argument(
        "--option", action="append", type=parse_option, metavar="KEY=VALUE",
        help="strategy option, value read as JSON when possible (repeatable), e.g. ratio=0.3 or layer_list=[2]",
    )  # fmt: skip


def _add_flops(sub: Any) -> None:
    from ..cost import PRESETS

    flops = sub.add_parser(
        "flops",
        help="FLOPs and KV-cache bytes of a strategy's schedule on a model shape (no model needed)",
        description="Cost a strategy's schedule on a model shape, dense vs. reduced: per-stage tokens, FLOPs in the "
        "paper convention (prefill, visual tokens only: sum of 4nd^2 + 2n^2d + 3ndm) and in the full convention "
        "(all tokens, real attention widths, LM head, vision encoder, decode), and KV-cache bytes. "
        f"Presets: {', '.join(PRESETS)}.",
    )
    flops.add_argument(
        "--model", default="llava-1.5-7b", metavar="NAME|PATH",
        help="a preset, or a local model directory / config.json read with AutoConfig (default: llava-1.5-7b)",
    )  # fmt: skip
    _strategy_arguments(flops)
    flops.add_argument("--visual-tokens", type=_at_least(1), metavar="N", help="visual tokens (default: the model's)")
    flops.add_argument("--text-tokens", type=_at_least(0), metavar="T", help="text tokens of the prompt (default: 64)")
    flops.add_argument(
        "--new-tokens", type=_at_least(0), default=0, metavar="K", help="decode steps to cost (default: 0)"
    )
    flops.add_argument("--kv-dtype", default="bfloat16", help="KV-cache dtype for the bytes (default: bfloat16)")
    flops.add_argument(
        "--json", nargs="?", const="-", metavar="PATH",
        help="print the numbers as JSON instead of the table (or, with PATH, also write them there)",
    )  # fmt: skip
    flops.set_defaults(func=cmd_flops)


def _add_bench(sub: Any) -> None:
    bench = sub.add_parser(
        "bench",
        help="measure dense vs. wrapped on a random-weight LLaVA: prefill, decode, training, memory, KV cache",
        description="Build a random-weight stock LlavaForConditionalGeneration of a given shape (default: LLaVA-1.5-7B "
        "at 1/4 width on CPU, the true shape on CUDA) and time it dense and wrapped in one process: alternating "
        "pairs after warm-up, medians. Reports prefill (whole forward and language model only), the engine's own "
        "hook time, decode per token, a training step, peak memory and KV-cache bytes, each next to the FLOPs-ideal "
        "speedup of the same schedule. Long runs print one progress line per step on stderr.",
    )
    _strategy_arguments(bench)
    bench.add_argument("--shape", default="llava-1.5-7b", help="llava-1.5-7b, llava-1.5-13b, llava-next-7b or tiny")
    bench.add_argument("--scale", type=_at_least(1), help="divide the widths by this (default: 4 on CPU, 1 on CUDA)")
    bench.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    bench.add_argument("--dtype", help="float32, bfloat16 or float16 (default: float32 on CPU, bfloat16 on CUDA)")
    bench.add_argument(
        "--repeats", type=_at_least(1), default=5, metavar="N", help="timed pairs per phase (default: 5)"
    )
    bench.add_argument(
        "--warmup", type=_at_least(0), default=1, metavar="N", help="warm-up pairs per phase (default: 1)"
    )
    bench.add_argument("--new-tokens", type=_at_least(0), default=16, metavar="N",
                       help="greedy tokens per generate, >= 2; 0 skips decode (default: 16)")  # fmt: skip
    bench.add_argument("--batch", type=_at_least(1), default=1, metavar="B", help="prompts per batch (default: 1)")
    bench.add_argument("--threads", type=_at_least(0), default=0, metavar="N",
                       help="torch CPU threads (default 0: torch's default, i.e. OMP_NUM_THREADS)")  # fmt: skip
    bench.add_argument("--seed", type=int, default=0, help="weights, ids and pixels (default: 0)")
    for flag, what in (("layers", "decoder layers"), ("hidden", "hidden size"), ("intermediate", "MLP width"),
                       ("heads", "attention heads"), ("kv-heads", "key/value heads"),
                       ("images", "images per prompt (576 visual tokens each)"),
                       ("text-tokens", "text tokens of the prompt"), ("answer-tokens", "supervised tokens in training")):  # fmt: skip
        bench.add_argument(f"--{flag}", type=_at_least(1), metavar="N", help=f"override the shape's {what}")
    bench.add_argument("--no-train", action="store_true", help="skip the training step")
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    bench.add_argument(
        "--length-scaling", action="store_true",
        help="also time the dense language model at each stage's length: the speedup the kernels allow",
    )  # fmt: skip
    bench.add_argument("--quiet", action="store_true", help="no progress lines")
    bench.add_argument("--json", metavar="PATH", help="write every number to this JSON file ('-': print it instead)")
    bench.add_argument("--plot", metavar="PATH", help="write a PNG of measured vs. ideal speedups (needs matplotlib)")
    bench.set_defaults(func=cmd_bench)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status (0 ok, 2 usage error); never raises SystemExit itself."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and argparse usage errors
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else USAGE_ERROR
    try:
        return args.func(args)
    except (CliError, TokenpruneError) as exc:
        print(f"tokenprune: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except BrokenPipeError:  # `tokenprune list | head`: the reader left; stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush cannot fail again
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
