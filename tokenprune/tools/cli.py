"""The ``tokenprune`` command: ``list`` what is installed, run the ``demo``, cost a schedule
(``flops``) and measure it (``bench``); ``eval``, ``fidelity`` and ``visualize`` come from
`tokenprune.tools.vqa.commands`.

Plain-text output only (`tokenprune.tools.tables`, `tokenprune.tools.reports`), so it reads the same
in a terminal, a CI log and a bug report. Usage errors (a bad option value, an unknown strategy)
print one paragraph and exit with status 2, never a traceback: the message is the documentation.
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
from ..vision_language import runs_in_llm_only
from ..errors import TokenpruneError
from ..registry import get_registry
from .arguments import (
    CliError, add_strategy_arguments, at_least, build_strategy, parse_option, validation_message, write_json,
)  # fmt: skip
from .reports import render_bench, render_demo, render_flops
from .tables import format_table, plural

__all__ = ["main", "build_parser", "flops_report", "load_dims"]

DISTRIBUTION = "tokenprune-vlm"
USAGE_ERROR = 2


def _source(source: str) -> str:
    """Mark entries of this distribution as built-in; third-party ones show their package."""
    return f"{source} (built-in)" if source.split(" ")[0] == DISTRIBUTION else source


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
        plural(len(strategies) - 1, "strategy", "strategies"),
        plural(len(components) - 1, "component", "components"),
        plural(len(adapters) - 1, "adapter", "adapters"),
        plural(len(registry.encoder_adapters), "vision-encoder adapter", "vision-encoder adapters"),
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
        raise CliError(validation_message(exc, args.strategy)) from None
    print(render_demo(result))
    if args.json:
        write_json(args.json, result)
        print(f"\nwrote {args.json}")
    return 0


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


def video_flops_report(args: argparse.Namespace) -> dict[str, Any]:
    """``tokenprune flops --video``: the video's visual tokens and the dense vs. strategy cost (`tokenprune.video_cost`)."""
    from ..video_cost import VideoShape, video_cost

    if args.visual_tokens is not None:
        raise CliError("--video sets the visual tokens (from the frames and their size); drop --visual-tokens.")
    dims, _ = load_dims(args.model)
    try:
        shape = VideoShape.parse(args.video)
        return video_cost(dims, args.model, shape, build_strategy(args.strategy, dict(args.option or [])),
                          text_tokens=args.text_tokens, new_tokens=args.new_tokens, kv_dtype=args.kv_dtype)  # fmt: skip
    except ValueError as exc:
        raise CliError(f"--video: {exc}") from None


def cmd_flops(args: argparse.Namespace) -> int:
    """Print the cost table (or the JSON) of a strategy's schedule on a model shape."""
    if args.video:
        from ..video_cost import render_video_cost

        data = video_flops_report(args)
        print(json.dumps(data, indent=2) if args.json == "-" else render_video_cost(data))
        if args.json and args.json != "-":
            write_json(args.json, data)
        return 0
    data = flops_report(
        args.model, args.strategy, dict(args.option or []), args.visual_tokens, args.text_tokens,
        args.new_tokens, args.kv_dtype,
    )  # fmt: skip
    if args.json == "-":
        print(json.dumps(data, indent=2))
        return 0
    print(render_flops(data))
    if args.json:
        write_json(args.json, data)
        print(f"\nwrote {args.json}")
    return 0


# -- bench ------------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> int:
    """Run the measured benchmark, print the table, write JSON and the plot."""
    from pydantic import ValidationError

    from . import bench

    options = dict(args.option or [])
    if args.video:
        return _bench_video(args, options)
    args.shape = args.shape or "llava-1.5-7b"
    if needs_frames(args.strategy, options):
        raise CliError(
            f"{args.strategy!r} selects video tokens across frames, and --shape {args.shape} prompts hold still images. "
            "Give a video: --video FRAMESxHEIGHTxWIDTH[xTEMPORAL_PATCH] with --shape qwen2-vl-7b or qwen2.5-vl-7b "
            "(e.g. tokenprune bench --shape qwen2.5-vl-7b --video 16x336x336 --strategy evs)."
        )
    if args.modes:
        return _bench_modes(args, options)
    try:
        result = bench.run(
            args.strategy, options, shape=args.shape, scale=args.scale, device=args.device, dtype=args.dtype,
            repeats=args.repeats, warmup=args.warmup, new_tokens=args.new_tokens, batch=args.batch,
            threads=args.threads or None, seed=args.seed, train=not args.no_train, memory=not args.no_memory,
            scaling=args.length_scaling, compile_selection=args.compile_selection,
            progress=None if args.quiet else bench.stderr_progress,
            layers=args.layers, hidden=args.hidden, intermediate=args.intermediate, heads=args.heads,
            kv_heads=args.kv_heads, images=args.images, text_tokens=args.text_tokens, answer_tokens=args.answer_tokens,
            vision_layers=args.vision_layers, vocab=args.vocab,
        )  # fmt: skip
    except ValidationError as exc:
        raise CliError(validation_message(exc, args.strategy)) from None
    except (ValueError, RuntimeError) as exc:
        if isinstance(exc, TokenpruneError):
            raise
        raise CliError(str(exc)) from None
    return _report_bench(args, result, render_bench(result), lambda: bench.plot(result, args.plot))


def _report_bench(args: argparse.Namespace, result: dict, table: str, plot: Any) -> int:
    """Print the table (or the JSON with ``--json -``), write ``--json`` and ``--plot``; shared by image and video runs."""
    if args.json == "-":
        print(json.dumps(result, indent=2))
    else:
        print(table)
        if args.json:
            write_json(args.json, result)
            print(f"\nwrote {args.json}")
    if args.plot:
        try:
            path = plot()
        except RuntimeError as exc:
            raise CliError(str(exc)) from None
        print(f"wrote {path}", file=sys.stderr if args.json == "-" else sys.stdout)
    return 0


def needs_frames(strategy: str, options: dict[str, Any]) -> bool:
    """Whether the strategy selects across video frames (a `TemporalSelection` at the projector)."""
    from ..components.temporal import TemporalSelection

    return isinstance(getattr(build_strategy(strategy, options), "projector", None), TemporalSelection)


def _bench_video(args: argparse.Namespace, options: dict) -> int:
    """``tokenprune bench --video``: TTFT and TPOT of one video prompt, dense vs. wrapped (`bench_video`)."""
    from pydantic import ValidationError

    from . import bench, bench_video, video_models

    shape = args.shape or "qwen2.5-vl-7b"
    if not video_models.is_video_shape(shape):
        raise CliError(f"--video needs a video model shape: --shape {' or '.join(video_models.VIDEO_SHAPES)} (got {shape!r}).")
    refused = [flag for flag, on in (("--modes", args.modes), ("--images", args.images), ("--batch", args.batch > 1),
                                     ("--answer-tokens", args.answer_tokens), ("--length-scaling", args.length_scaling),
                                     ("--compile-selection", args.compile_selection))
               if on]  # fmt: skip
    if refused:
        raise CliError(f"--video times one video prompt's prefill and decode; drop {', '.join(refused)}.")
    overrides = {k: getattr(args, k) for k in ("layers", "hidden", "intermediate", "heads", "kv_heads", "text_tokens",
                                               "vision_layers", "vocab")}  # fmt: skip
    try:
        resolved = video_models.resolve_video_shape(shape, args.video, args.scale, args.device, **overrides)
    except ValueError as exc:
        raise CliError(f"--video {args.video} on {shape}: {exc}") from None
    try:
        result = bench_video.run_video(
            args.strategy, options, shape=resolved, device=args.device, dtype=args.dtype, repeats=args.repeats,
            warmup=args.warmup, new_tokens=args.new_tokens, threads=args.threads or None, seed=args.seed,
            progress=None if args.quiet else bench.stderr_progress,
        )  # fmt: skip
    except ValidationError as exc:
        raise CliError(validation_message(exc, args.strategy)) from None
    except (ValueError, RuntimeError) as exc:
        if isinstance(exc, TokenpruneError):
            raise
        raise CliError(str(exc)) from None
    sh, v = result["shape"], result["shape"]["video"]
    opts = ", ".join(f"{k}={x}" for k, x in options.items())
    title = (f"{result['strategy']}{f' ({opts})' if opts else ''} on {sh['name']}:\nvideo {v['frames']}x{v['height']}x"
             f"{v['width']} = {sh['visual_tokens']} visual tokens, LLM gets {result['flops']['llm_visual_tokens']}; "
             f"{sh['dtype']}, {result['environment']['device']}, {result['environment']['torch_threads']} thread(s)")  # fmt: skip
    table = bench_video.render_video_bench(result)
    return _report_bench(args, result, table, lambda: bench.plot(result, args.plot, title=title))


def _bench_modes(args: argparse.Namespace, options: dict) -> int:
    """``tokenprune bench --modes``: TTFT, TPOT and end-to-end generate per engine mode (`bench_modes`)."""
    import torch
    from pydantic import ValidationError

    from . import bench, bench_modes

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in bench_modes.MODES]
    if unknown:
        raise CliError(f"Unknown mode(s) {unknown}; --modes takes a comma-separated list of {', '.join(bench_modes.MODES)}.")
    if args.new_tokens < 2:
        raise CliError("--modes times decode steps: --new-tokens must be at least 2.")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    try:
        result = bench_modes.run_modes(
            shape=args.shape, scale=args.scale, strategy=args.strategy, options=options, modes=modes,
            device=args.device, dtype=dtype, new_tokens=args.new_tokens, repeats=args.repeats, warmup=args.warmup,
            images=args.images, progress=(lambda line: None) if args.quiet else bench.stderr_progress,
        )  # fmt: skip
    except ValidationError as exc:
        raise CliError(validation_message(exc, args.strategy)) from None
    if args.json == "-":
        print(json.dumps(result, indent=2))
    else:
        print(bench_modes.render(result))
        if args.json:
            write_json(args.json, result)
            print(f"\nwrote {args.json}")
    if args.plot:
        print(f"wrote {bench_modes.plot(result, args.plot)}", file=sys.stderr if args.json == "-" else sys.stdout)
    return 0


# -- entry point ------------------------------------------------------------------------------
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
    demo.add_argument("--max-new-tokens", type=at_least(1), default=8, metavar="N", help="greedy tokens (default: 8)")
    demo.add_argument("--repeats", type=at_least(1), default=5, metavar="N", help="timed prefills each (default: 5)")
    demo.add_argument("--seed", type=int, default=0, help="weights, prompts and pixels (default: 0)")
    demo.add_argument(
        "--threads", type=at_least(0), default=1, metavar="N",
        help="torch CPU threads (default: 1, robust on busy machines; 0 = torch's default)",
    )  # fmt: skip
    demo.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    demo.add_argument("--questions", type=at_least(0), default=64, metavar="N",
                      help="test questions per dataset for the trained tiny VQA LLaVA part (default: 64; 0 skips it)")  # fmt: skip
    demo.add_argument("--picture", metavar="PATH", help="kept-patch PNG path (default: in the temp folder)")
    demo.set_defaults(func=cmd_demo)
    _add_flops(sub)
    _add_bench(sub)
    from .vqa.commands import add_subcommands  # eval, fidelity, visualize on the trained tiny VQA LLaVA

    add_subcommands(sub)
    return parser


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
    add_strategy_arguments(flops)
    flops.add_argument("--visual-tokens", type=at_least(1), metavar="N", help="visual tokens (default: the model's)")
    flops.add_argument("--text-tokens", type=at_least(0), metavar="T", help="text tokens of the prompt (default: 64)")
    flops.add_argument(
        "--video", metavar="FxHxW[xT]",
        help="cost one video of F frames at HxW px (T: temporal patch) instead of --visual-tokens; Qwen2-VL, Qwen2.5-VL, "
        "Qwen3-VL and LLaVA-OneVision presets or checkpoints, laid out from their config "
        "(e.g. --model qwen2.5-vl-7b --video 32x448x448 --strategy evs)",
    )  # fmt: skip
    flops.add_argument(
        "--new-tokens", type=at_least(0), default=0, metavar="K", help="decode steps to cost (default: 0)"
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
    add_strategy_arguments(bench)
    bench.add_argument(
        "--shape",
        help="llava-1.5-7b (default), llava-1.5-13b, llava-next-7b or tiny; with --video qwen2.5-vl-7b (default), "
        "qwen2-vl-7b or llava-onevision-7b",
    )
    bench.add_argument(
        "--video", metavar="FxHxW[xT]",
        help="instead: one prompt holding a video of F frames at HxW px (T: temporal patch, Qwen only) on a Qwen2-VL, "
        "Qwen2.5-VL or LLaVA-OneVision shape; times prefill (TTFT) and decode (TPOT) dense vs. wrapped next to the "
        "FLOPs-ideal, for the temporal strategies (evs, dycoke, vidcom2, temporal_pyramiddrop) and LLM-side ones "
        "(e.g. --shape qwen2.5-vl-7b --video 16x336x336 --scale 8 --strategy evs --option ratio=0.5)",
    )  # fmt: skip
    bench.add_argument("--scale", type=at_least(1), help="divide the widths by this (default: 4 on CPU, 1 on CUDA)")
    bench.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    bench.add_argument("--dtype", help="float32, bfloat16 or float16 (default: float32 on CPU, bfloat16 on CUDA)")
    bench.add_argument(
        "--repeats", type=at_least(1), default=5, metavar="N", help="timed pairs per phase (default: 5)"
    )
    bench.add_argument(
        "--warmup", type=at_least(0), default=1, metavar="N", help="warm-up pairs per phase (default: 1)"
    )
    bench.add_argument("--new-tokens", type=at_least(0), default=16, metavar="N",
                       help="greedy tokens per generate, >= 2; 0 skips decode (default: 16)")  # fmt: skip
    bench.add_argument("--batch", type=at_least(1), default=1, metavar="B", help="prompts per batch (default: 1)")
    bench.add_argument("--threads", type=at_least(0), default=0, metavar="N",
                       help="torch CPU threads (default 0: torch's default, i.e. OMP_NUM_THREADS)")  # fmt: skip
    bench.add_argument("--seed", type=int, default=0, help="weights, ids and pixels (default: 0)")
    for flag, what in (("layers", "decoder layers"), ("hidden", "hidden size"), ("intermediate", "MLP width"),
                       ("heads", "attention heads"), ("kv-heads", "key/value heads"),
                       ("images", "images per prompt (576 visual tokens each)"),
                       ("text-tokens", "text tokens of the prompt"), ("answer-tokens", "supervised tokens in training"),
                       ("vision-layers", "vision tower blocks"), ("vocab", "vocabulary size")):  # fmt: skip
        bench.add_argument(f"--{flag}", type=at_least(1), metavar="N", help=f"override the shape's {what}")
    bench.add_argument("--no-train", action="store_true", help="skip the training step")
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    bench.add_argument(
        "--length-scaling", action="store_true",
        help="also time the dense language model at each stage's length: the speedup the kernels allow",
    )  # fmt: skip
    bench.add_argument(
        "--compile-selection", action="store_true",
        help="run the wrapped model's selection step compiled (WrapHandle.compile_selection; warm-up pays the compile)",
    )  # fmt: skip
    bench.add_argument(
        "--modes", metavar="LIST",
        help="instead: time TTFT, TPOT and end-to-end generate in these engine modes, dense vs. wrapped "
             "(comma-separated: eager, static, compiled; e.g. --modes eager,static,compiled)",
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
