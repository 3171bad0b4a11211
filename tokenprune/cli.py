"""The ``tokenprune`` command: ``list`` what is installed, run the ``demo``.

Plain-text output only (aligned tables, no colour library), so it reads the same in a terminal,
a CI log and a bug report. Usage errors (a bad option value, an unknown strategy) print one
paragraph and exit with status 2, never a traceback: the message is the documentation.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import TokenpruneError
from .registry import get_registry

__all__ = ["main", "build_parser", "parse_option", "format_table"]

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
    """Print every registered strategy and adapter with the package it came from."""
    registry = get_registry()
    strategies = [["name", "aliases", "source", "description"]] + [
        [s.name, ", ".join(s.aliases) or "-", _source(s.source), s.description or "-"]
        for s in sorted(registry.strategies.values(), key=lambda s: s.name)
    ]
    adapters = [["name", "model types", "source"]] + [
        [a.name, ", ".join(a.adapter.model_types), _source(a.source)]
        for a in sorted(registry.adapters.values(), key=lambda a: a.name)
    ]
    counts = [_plural(len(strategies) - 1, "strategy", "strategies"), _plural(len(adapters) - 1, "adapter", "adapters")]
    print(f"tokenprune {__version__}: {', '.join(counts)}\n")
    print(f"Strategies\n{format_table(strategies)}\n\nAdapters\n{format_table(adapters)}")
    return 0


# -- demo -------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo, print the report, optionally write the numbers as JSON."""
    from pydantic import ValidationError

    from . import demo

    options = dict(args.option or [])
    try:
        result = demo.run(args.strategy, options, args.max_new_tokens, args.repeats, args.seed, args.threads or None)
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
    demo.set_defaults(func=cmd_demo)
    return parser


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
