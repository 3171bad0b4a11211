"""Measured benchmark for video prompts: prefill (TTFT) and decode (TPOT), dense vs. wrapped, next to the FLOPs-ideal.

`tokenprune bench --video FxHxW[xT] --shape qwen2.5-vl-7b` builds a random-weight stock model of a
video family (Qwen2-VL, Qwen2.5-VL or LLaVA-OneVision; the 7B shapes of `tokenprune.cost.PRESETS`,
widths divided by ``scale`` as the image benchmark does) from config objects, one prompt holding one
video of that shape, and times it dense and wrapped in one process with the image benchmark's
protocol (`tokenprune.tools.bench`: warm-up pairs, then alternating pairs, medians):

* **prefill / TTFT**: one forward over the prompt as ``generate`` runs it (``use_cache=True``,
  ``logits_to_keep=1``), the whole forward (vision tower included: it runs on every frame either
  way) and the language model alone;
* **decode / TPOT**: greedy ``generate``, every step after the first new token timed by a streamer.

The temporal strategies (EVS, DyCoke, VidCom², ``temporal_pyramiddrop``) select at the projector
and the LLM then runs on fewer tokens from layer 0; an LLM-side one (PyramidDrop) drops inside the
LLM. Their FLOPs-ideal is `tokenprune.video_cost.video_cost` of the same video on the model as built
(scaled widths): projector-side kept counts from the strategy's own ``kept_count``, LLM-side stages
from its schedule, so the two kinds are compared on one footing.

The models and the prompt come from `tokenprune.tools.video_models`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch

from ..cost import ModelDims, kv_cache_bytes
from ..engine.compat import cache_from_output
from ..registry import get_registry
from ..video_cost import VideoShape, video_cost
from .bench_common import (
    alternate,
    cache_bytes,
    dense_or_wrapped,
    environment,
    median,
    parse_dtype,
    ratio,
    timed_generate,
    timed_prefill,
)
from .clocks import SpanClock
from .video_models import (
    VideoBenchShape,
    build_video_inputs,
    build_video_model,
    resolve_video_shape,
)

__all__ = ["render_video_bench", "run_video"]


# -- measurement ----------------------------------------------------------------------------
class _VideoRunner:
    """The model, the prompt and the protocol of one run (as `tokenprune.tools.bench._Runner`, prefill and decode only)."""

    def __init__(self, model, inputs, strategy, options, device, repeats, warmup, new_tokens, say):
        self.model, self.inputs, self.strategy, self.options = model, inputs, strategy, options
        self.device, self.repeats, self.warmup, self.new_tokens, self.say = device, repeats, warmup, new_tokens, say
        self.stack = get_registry().adapter_for(model).locate(model)

    def alternate(self, phase: str, once: Callable[[bool], dict[str, Any]]) -> tuple[list[dict], list[dict]]:
        return alternate(phase, once, self.repeats, self.warmup, self.say)

    def _mode(self, wrapped: bool):
        return dense_or_wrapped(self.model, wrapped, self.strategy, self.options)

    def prefill_once(self, wrapped: bool) -> dict[str, Any]:
        with self._mode(wrapped) as handle:
            llm = SpanClock(self.stack.language_model, self.device)
            try:
                seconds, out = timed_prefill(self.model, self.inputs, self.device)
            finally:
                llm.remove()
            kv, lengths = cache_bytes(cache_from_output(out))
            per_layer = handle.tokens_per_layer() if handle is not None else None
        return {"seconds": seconds, "llm_seconds": llm.seconds, "kv_bytes": kv, "kv_lengths": lengths,
                "tokens": per_layer}  # fmt: skip

    def generate_once(self, wrapped: bool) -> dict[str, Any]:
        with self._mode(wrapped):
            return timed_generate(self.model, self.inputs, self.new_tokens, self.device)


def run_video(
    strategy: str = "evs",
    options: dict[str, Any] | None = None,
    *,
    shape: str | VideoBenchShape = "qwen2.5-vl-7b",
    video: str | VideoShape = "16x336x336",
    scale: int | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    repeats: int = 3,
    warmup: int = 1,
    new_tokens: int = 8,
    threads: int | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    **shape_overrides: Any,
) -> dict[str, Any]:
    """Time one video prompt dense and wrapped; JSON-ready results (see the module docstring).

    Args:
        strategy: a registered strategy name.
        options: its options (validated before the model is built).
        shape: a `VIDEO_SHAPES` preset or a `VideoBenchShape`.
        video: ``"FxHxW"`` or ``"FxHxWxT"`` (T: temporal patch), or a `VideoShape` (ignored for a `VideoBenchShape`).
        scale: width divisor (default 4 on CPU, 1 on CUDA).
        device: ``"cpu"`` or ``"cuda"``.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (default float32 on CPU, bfloat16 on CUDA).
        repeats: timed dense/wrapped pairs per phase (medians are reported).
        warmup: untimed pairs before each phase.
        new_tokens: greedy tokens per ``generate`` (>= 2; 0 skips decode).
        threads: torch intra-op threads (``None``: as is; restored afterwards).
        seed: weights, ids and frames.
        progress: called with one line per step (``None``: silent).
        **shape_overrides: `VideoBenchShape` fields (``layers=8``, ``vision_layers=4``, ``text_tokens=32``...).

    Raises:
        ValueError: a bad shape or video, ``new_tokens == 1``.
        tokenprune.errors.TokenpruneError: the strategy cannot run on this family (e.g. a projector-side
            strategy that would reduce LLaVA-OneVision's images), raised by ``wrap``, before any timing.
    """
    options = dict(options or {})
    built = get_registry().build(strategy, **options)  # invalid options fail before the slow build
    if new_tokens == 1 or new_tokens < 0:
        raise ValueError("new_tokens must be 0 (skip decode) or >= 2: decode steps are timed after the first token.")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but torch.cuda.is_available() is False on this machine.")
    if isinstance(shape, str):
        shape = resolve_video_shape(shape, video, scale, device, **shape_overrides)
    torch_dtype = parse_dtype(dtype, device)
    say = progress or (lambda line: None)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        v = shape.video
        say(f"building {shape.name}: {shape.layers} layers, d={shape.hidden}, vision {shape.vision_layers} x "
            f"{shape.vision_hidden}; video {v.frames} frames {v.height}x{v.width} -> {shape.visual_tokens} visual tokens; "
            f"{str(torch_dtype).removeprefix('torch.')} on {device}, {torch.get_num_threads()} threads")  # fmt: skip
        model = build_video_model(shape, device, torch_dtype, seed)
        inputs = build_video_inputs(shape, seed, device)
        runner = _VideoRunner(model, inputs, strategy, options, device, repeats, warmup, new_tokens, say)
        return _measure(runner, shape, built, torch_dtype, seed)
    finally:
        torch.set_num_threads(previous)


def _measure(r: _VideoRunner, shape: VideoBenchShape, built: Any, torch_dtype: torch.dtype, seed: int) -> dict[str, Any]:
    model = r.model
    dims = ModelDims.from_config(model.config, name=shape.name)
    text = int(r.inputs["input_ids"].shape[1]) - shape.visual_tokens
    dtype_name = str(torch_dtype).removeprefix("torch.")
    cost = video_cost(dims, shape.family, shape.video, built, text_tokens=text, new_tokens=r.new_tokens,
                      kv_dtype=dtype_name)  # fmt: skip
    llm_only = _llm_only_ideal(dims, cost)
    result: dict[str, Any] = {
        "kind": "video",
        "strategy": get_registry().strategy(r.strategy).name,
        "options": r.options,
        "shape": {
            **{k: v for k, v in asdict(shape).items() if k != "video"}, "video": cost["video"], "grid": cost["grid"],
            "visual_tokens": shape.visual_tokens, "text_tokens": text, "dtype": dtype_name, "attention": "sdpa",
            "class": type(model).__name__, "weights": f"random (HF init), seed {seed}",
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "environment": environment(r.device),
        "protocol": {"repeats": r.repeats, "warmup_pairs": r.warmup,
                     "order": "alternating dense/wrapped pairs (wrapped first on odd pairs)", "statistic": "median"},
        "flops": cost,
    }  # fmt: skip

    r.say("prefill (TTFT): dense vs. wrapped (one forward with use_cache=True, logits_to_keep=1)")
    dense, wrapped = r.alternate("prefill", r.prefill_once)
    d_s, w_s = median([x["seconds"] for x in dense]), median([x["seconds"] for x in wrapped])
    d_llm, w_llm = median([x["llm_seconds"] for x in dense]), median([x["llm_seconds"] for x in wrapped])
    result["prefill"] = {
        "dense_s": d_s, "wrapped_s": w_s, "speedup": ratio(d_s, w_s),
        "ideal_speedup": cost["with_vision"]["ideal_speedup"],
        "llm_dense_s": d_llm, "llm_wrapped_s": w_llm, "llm_speedup": ratio(d_llm, w_llm), "llm_ideal_speedup": llm_only,
        # vision tower, projector-side selection and embedding: what runs outside the language model
        "outside_llm_dense_s": median([x["seconds"] - x["llm_seconds"] for x in dense]),
        "outside_llm_wrapped_s": median([x["seconds"] - x["llm_seconds"] for x in wrapped]),
        "samples": {"dense_s": [x["seconds"] for x in dense], "wrapped_s": [x["seconds"] for x in wrapped],
                    "llm_dense_s": [x["llm_seconds"] for x in dense], "llm_wrapped_s": [x["llm_seconds"] for x in wrapped]},
        "tokens_per_layer": wrapped[-1]["tokens"],
    }  # fmt: skip
    kv_d, kv_w = dense[-1]["kv_bytes"], wrapped[-1]["kv_bytes"]
    element = torch.tensor([], dtype=torch_dtype).element_size()
    model_d = kv_cache_bytes(dims, [text + shape.visual_tokens] * dims.num_layers, element)
    model_w = kv_cache_bytes(dims, [text + v for v in cost["visual_tokens_per_layer"]], element)
    result["kv_cache_bytes"] = {"dense": kv_d, "wrapped": kv_w, "ratio": ratio(kv_d, kv_w), "model_dense": model_d,
                                "model_wrapped": model_w, "model_ratio": ratio(model_d, model_w)}  # fmt: skip
    if r.new_tokens:
        r.say(f"decode (TPOT): greedy generate of {r.new_tokens} tokens, each step timed by a streamer")
        dense, wrapped = r.alternate("decode", r.generate_once)
        d_step = median([s for x in dense for s in x["steps"]])
        w_step = median([s for x in wrapped for s in x["steps"]])
        result["decode"] = {
            "new_tokens": r.new_tokens, "dense_s_per_token": d_step, "wrapped_s_per_token": w_step,
            "speedup": ratio(d_step, w_step),
            "ideal_speedup": ratio(cost["decode"]["dense_tflops"], cost["decode"]["pruned_tflops"]),
            "samples": {"dense_s_per_token": [median(x["steps"]) for x in dense],
                        "wrapped_s_per_token": [median(x["steps"]) for x in wrapped]},
            "generated_tokens": wrapped[-1]["generated"],
            "method": "streamer timestamps between consecutive new tokens (steps 2..N); the prefill and first token excluded",
        }  # fmt: skip
    result["metrics"] = _metrics(result)
    return result


def _llm_only_ideal(dims: ModelDims, cost: dict[str, Any]) -> float:
    """The LLM prefill's ideal speedup without the LM head's one token (what the language-model clock times)."""
    from ..cost import full_layer_flops

    text = cost["text_tokens"]
    dense = dims.num_layers * full_layer_flops(dims, text + cost["visual_tokens"])
    pruned_ = sum(full_layer_flops(dims, text + v) for v in cost["visual_tokens_per_layer"])
    return dense / pruned_ if pruned_ else math.inf


def _metrics(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Measured vs. ideal rows in `tokenprune.tools.bench.plot`'s format."""
    p = result["prefill"]
    rows = [
        {"metric": "TTFT (whole forward)", "measured": p["speedup"], "ideal": p["ideal_speedup"]},
        {"metric": "prefill (language model)", "measured": p["llm_speedup"], "ideal": p["llm_ideal_speedup"]},
    ]
    if "decode" in result:
        d = result["decode"]
        rows.append({"metric": "TPOT (decode per token)", "measured": d["speedup"], "ideal": d["ideal_speedup"]})
    kv = result["kv_cache_bytes"]
    rows.append({"metric": "KV cache bytes", "measured": kv["ratio"], "ideal": kv["model_ratio"]})
    for row in rows:
        row["ratio_to_ideal"] = row["measured"] / row["ideal"] if row["ideal"] else None
    return rows


def render_video_bench(r: dict[str, Any]) -> str:
    """The ``tokenprune bench --video`` report: the model, the video, and dense vs. wrapped per metric."""
    from .tables import format_bytes, format_ms, format_speedup, format_table

    sh, env, v = r["shape"], r["environment"], r["shape"]["video"]
    opts = " ".join(f"{k}={v}" for k, v in r["options"].items()) or "default options"
    f = r["flops"]
    header = (
        f"tokenprune bench --video: {r['strategy']} ({opts}) on a random-weight {sh['class']} '{sh['name']}'\n"
        f"  model     {sh['layers']} layers, hidden {sh['hidden']}, MLP {sh['intermediate']}, {sh['heads']} heads / "
        f"{sh['kv_heads']} KV heads, vision {sh['vision_layers']} x {sh['vision_hidden']}, "
        f"{sh['parameters'] / 1e6:.0f}M parameters, {sh['dtype']}, {sh['attention']}\n"
        f"  video     {v['frames']} frames {v['height']}x{v['width']} px -> grid {'x'.join(map(str, sh['grid']))} = "
        f"{sh['visual_tokens']} visual tokens (+ {sh['text_tokens']} text)\n"
        f"  strategy  the LLM receives {f['llm_visual_tokens']} visual tokens, {f['avg_visual_tokens']:.0f} per layer on average\n"
        f"  machine   {env['device']}: {env.get('gpu') or env.get('cpu')}, {env['cpu_count']} CPUs, "
        f"{env['torch_threads']} torch thread(s) (OMP_NUM_THREADS={env['OMP_NUM_THREADS']})\n"
        f"  protocol  {r['protocol']['warmup_pairs']} warm-up pair(s), then {r['protocol']['repeats']} alternating "
        "dense/wrapped pairs per phase; medians"
    )
    rows: list[list[Any]] = [["metric", "dense", "wrapped", "speedup", "FLOPs-ideal", "of ideal"]]
    p = r["prefill"]
    for name, d, w, s, i in (("TTFT, whole forward", p["dense_s"], p["wrapped_s"], p["speedup"], p["ideal_speedup"]),
                             ("prefill, language model only", p["llm_dense_s"], p["llm_wrapped_s"], p["llm_speedup"],
                              p["llm_ideal_speedup"])):  # fmt: skip
        rows.append([name, format_ms(d), format_ms(w), format_speedup(s), format_speedup(i), f"{100 * s / i:.0f}%"])
    if "decode" in r:
        d = r["decode"]
        rows.append([f"TPOT, decode per token ({d['new_tokens']} new)", format_ms(d["dense_s_per_token"]),
                     format_ms(d["wrapped_s_per_token"]), format_speedup(d["speedup"]), format_speedup(d["ideal_speedup"]),
                     f"{100 * d['speedup'] / d['ideal_speedup']:.0f}%"])  # fmt: skip
    kv = r["kv_cache_bytes"]
    rows.append(["KV cache after prefill", format_bytes(kv["dense"]), format_bytes(kv["wrapped"]), format_speedup(kv["ratio"]),
                 format_speedup(kv["model_ratio"]), f"{100 * kv['ratio'] / kv['model_ratio']:.0f}%"])  # fmt: skip
    return f"{header}\n\n{format_table(rows)}"
