"""Measured benchmark: a wrapped vs. the dense stock LLaVA, in one process, next to the FLOPs-ideal.

`run` builds a random-weight `LlavaForConditionalGeneration` of a given shape from config objects
(timing depends on shapes, not on trained weights) and measures, dense and wrapped:

* **prefill**: one forward over the prompt as ``generate`` runs it (``use_cache=True``,
  ``logits_to_keep=1``); the whole forward and the language model alone (timed by hooks on the
  language model, so the vision tower and the LM head are excluded);
* **engine overhead**: the wall time spent inside tokenprune's own hooks during the wrapped
  prefill (planning, scoring, top-k, gathering, mask/rotary slicing, stats), bracketed by a
  timing hook registered before and one after the engine's hooks on every hooked module;
* **decode**: greedy ``generate`` of ``new_tokens`` tokens with a streamer that timestamps every
  step, so each decode step is timed on its own (the first interval, prefill + first token, is
  left out);
* **KV cache**: bytes of the key and value tensors the prefill's real cache holds, summed over layers;
* **training step**: forward + backward with labels (answer tokens supervised, prompt masked);
* **peak memory** of a prefill and of a training step, in a separate untimed pass: on CUDA
  ``torch.cuda.max_memory_allocated`` above the allocation before the call; on CPU the peak of
  live tensor bytes, replayed from torch.profiler's allocation events (``profile_memory=True``)
  in time order. Both count tensors allocated during the call above what was alive before it
  (weights excluded), not allocator caches or the process RSS.

Dense and wrapped runs alternate, after warm-up pairs, and medians are reported, so load on a
shared machine affects both sides alike. Each measured speedup sits next to the FLOPs-ideal
speedup of the same schedule from `tokenprune.cost` (full convention: text and visual tokens,
real attention widths).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..cost import ModelDims, estimate, kv_cache_bytes
from ..engine.compat import cache_from_output
from ..errors import UnsupportedFeatureError
from ..registry import get_registry
from ..vision_language import runs_in_llm_only
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
from .clocks import HookClock, SpanClock, sync
from .tiny_llava import LlavaDims, build_llava, llava_config

__all__ = ["SHAPES", "BenchShape", "build_config", "build_inputs", "build_model", "plot", "resolve_shape", "run"]

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
TEXT_BEFORE_SHARE = 35 / 64  # LLaVA-1.5 chat template: ~35 tokens before the image, the question after


@dataclass(frozen=True, kw_only=True)
class BenchShape(LlavaDims):
    """A LLaVA-1.5-style model (CLIP tower, 2-layer projector, Llama decoder: the `LlavaDims` fields) and its prompt.

    ``images`` images of ``image_size`` px with ``patch_size`` px patches give
    ``images * (image_size // patch_size)**2`` visual tokens (the CLS feature is dropped).
    Fields are given by name.
    """

    name: str
    images: int = 1
    text_tokens: int = 64
    answer_tokens: int = 32

    @property
    def visual_tokens(self) -> int:
        """Visual tokens per sample: images times patches per image."""
        return self.images * (self.image_size // self.patch_size) ** 2

    def scaled(self, factor: int) -> BenchShape:
        """Widths divided by ``factor`` (depth, token counts and the vocabulary kept); heads of width 64."""
        if factor == 1:
            return self
        hidden, v_hidden = self.hidden // factor, self.vision_hidden // factor
        heads, v_heads = max(1, hidden // 64), max(1, v_hidden // 64)
        kv = max(1, heads * self.kv_heads // self.heads)
        return replace(
            self, name=f"{self.name}/{factor}", hidden=hidden, intermediate=self.intermediate // factor,
            heads=heads, kv_heads=kv, vision_hidden=v_hidden,
            vision_intermediate=self.vision_intermediate // factor, vision_heads=v_heads,
        )  # fmt: skip


_LLAVA_7B = BenchShape(
    name="llava-1.5-7b", layers=32, hidden=4096, intermediate=11008, heads=32, kv_heads=32, vocab=32064,
    vision_layers=24, vision_hidden=1024, vision_intermediate=4096, vision_heads=16,
)  # fmt: skip
SHAPES: dict[str, BenchShape] = {
    "llava-1.5-7b": _LLAVA_7B,
    # LLaVA-NeXT's LLM and token count (2880 = 5 crops x 576, newline tokens aside) on the LLaVA-1.5 class.
    "llava-next-7b": replace(_LLAVA_7B, name="llava-next-7b", images=5),
    "llava-1.5-13b": replace(
        _LLAVA_7B, name="llava-1.5-13b", layers=40, hidden=5120, intermediate=13824, heads=40, kv_heads=40
    ),
    "tiny": BenchShape(
        name="tiny", layers=4, hidden=64, intermediate=172, heads=4, kv_heads=2, vocab=512,
        vision_layers=1, vision_hidden=32, vision_intermediate=64, vision_heads=2,
        text_tokens=16, answer_tokens=8,
    ),
}  # fmt: skip
"""Benchmark shapes. On CPU the default is ``llava-1.5-7b`` at scale 4 (d=1024, m=2752, 16 heads,
32 layers; CLIP tower at 1/4 width), on CUDA the true shape."""


def resolve_shape(
    name: str = "llava-1.5-7b", scale: int | None = None, device: str = "cpu", **overrides: Any
) -> BenchShape:
    """A shape by name, scaled (default: 4 on CPU, 1 on CUDA), with explicit fields overriding.

    ``overrides`` are `BenchShape` fields (``layers=16``, ``hidden=512``, ``images=5``, ...);
    ``None`` values are ignored.
    """
    if name not in SHAPES:
        raise ValueError(f"Unknown benchmark shape {name!r}; known: {', '.join(SHAPES)}.")
    shape = SHAPES[name]
    if scale is None:
        scale = 1 if name == "tiny" or not str(device).startswith("cpu") else 4
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}.")
    shape = shape.scaled(scale)
    changes = {k: v for k, v in overrides.items() if v is not None}
    if changes:
        unknown = set(changes) - set(BenchShape.__dataclass_fields__)
        if unknown:
            raise ValueError(f"Unknown shape fields {sorted(unknown)}.")
        shape = replace(shape, **changes)
        if "heads" in changes and "kv_heads" not in changes:
            shape = replace(shape, kv_heads=min(shape.kv_heads, shape.heads))
    if shape.hidden % shape.heads or shape.heads % shape.kv_heads:
        raise ValueError(
            f"hidden={shape.hidden} must be divisible by heads={shape.heads}, and heads by kv_heads={shape.kv_heads}."
        )
    return shape


def build_config(shape: BenchShape):
    """A `LlavaConfig` of the shape, SDPA attention."""
    length = shape.text_tokens + shape.visual_tokens + shape.answer_tokens + 1024
    config = llava_config(shape, image_token_id=shape.vocab - 1, max_positions=max(4096, length),
                          pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID)  # fmt: skip
    config._attn_implementation = "sdpa"
    return config


def build_model(shape: BenchShape, device: str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    """A random-weight stock `LlavaForConditionalGeneration` built directly on ``device`` in ``dtype``.

    ``device="meta"`` builds the structure only (no memory, no init): a quick check that a shape
    constructs, e.g. the true 7B shape on a machine without a GPU.
    """
    return build_llava(build_config(shape), seed=seed, device=device, dtype=dtype)


def build_inputs(shape: BenchShape, batch: int = 1, seed: int = 0, device: str = "cpu", labels: bool = False):
    """Unpadded prompts ``[BOS, text, images, question]`` (+ an answer with labels when ``labels``).

    Every row has the same layout (different random ids), so no padding is involved: the dense
    model runs its fastest path (no explicit attention mask).
    """
    gen = torch.Generator().manual_seed(seed)
    image_id = shape.vocab - 1
    before = max(1, round(shape.text_tokens * TEXT_BEFORE_SHARE))
    after = max(1, shape.text_tokens - before)
    answer = shape.answer_tokens if labels else 0
    rows, label_rows = [], []
    for _ in range(batch):
        text = torch.randint(3, image_id, (before - 1 + after + answer,), generator=gen)
        row = torch.cat([
            torch.tensor([BOS_ID]), text[: before - 1], torch.full((shape.visual_tokens,), image_id),
            text[before - 1 :],
        ])  # fmt: skip
        rows.append(row)
        lab = torch.full_like(row, -100)
        if answer:
            lab[-answer:] = row[-answer:]
        label_rows.append(lab)
    input_ids = torch.stack(rows)
    pixels = torch.randn((batch * shape.images, 3, shape.image_size, shape.image_size), generator=gen)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "pixel_values": pixels}
    if labels:
        inputs["labels"] = torch.stack(label_rows)
    return {k: v.to(device) for k, v in inputs.items()}


# -- measurements ---------------------------------------------------------------------------

def _cpu_peak_bytes(fn: Callable[[], Any]) -> int | None:
    """Peak live tensor bytes allocated during ``fn`` above the start, from torch.profiler's allocation events."""
    from torch.profiler import ProfilerActivity, profile

    try:
        from torch._C._profiler import _EventType
    except ImportError:  # pragma: no cover - private API moved
        return None
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():  # kineto prints a line to the C-level stderr at start and stop
        prof.start()
    try:
        fn()
    finally:
        with _quiet_stderr():
            prof.stop()
    try:
        roots = prof.profiler.kineto_results.experimental_event_tree()
    except AttributeError:  # pragma: no cover - private API moved
        return None
    events: list[tuple[int, int]] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and str(node.extra_fields.device).startswith("cpu"):
            events.append((node.start_time_ns, int(node.extra_fields.alloc_size)))
        stack.extend(node.children)
    events.sort()
    live = peak = 0
    for _, size in events:
        live += size
        peak = max(peak, live)
    return peak


@contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (C-level writes) for the duration; a no-op where it has no real descriptor."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(fd), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def _peak_bytes(fn: Callable[[], Any], device: str) -> int | None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    return _cpu_peak_bytes(fn)


class _Runner:
    """Holds the model, inputs and settings of one benchmark run."""

    def __init__(self, model, shape, strategy, options, device, repeats, warmup, new_tokens, batch, seed, progress,
                 compile_selection=False):  # fmt: skip
        self.model, self.shape, self.strategy, self.options = model, shape, strategy, options
        self.compile_selection = compile_selection
        self.device, self.repeats, self.warmup, self.new_tokens = device, repeats, warmup, new_tokens
        self.batch, self.seed, self.say = batch, seed, progress
        self.stack = get_registry().adapter_for(model).locate(model)
        self.inputs = build_inputs(shape, batch, seed, device)
        self.train_inputs = build_inputs(shape, batch, seed + 1, device, labels=True)

    def _alternate(self, phase: str, once: Callable[[bool], Any]) -> tuple[list[Any], list[Any]]:
        return alternate(phase, once, self.repeats, self.warmup, self.say)

    # prefill ---------------------------------------------------------------------------------
    def prefill_once(self, wrapped: bool) -> dict[str, Any]:
        stack = self.stack
        with dense_or_wrapped(self.model, wrapped, self.strategy, self.options, self.compile_selection) as handle:
            layers = list(handle.layers) if handle is not None else []
            first = layers[0] if layers else len(stack.layers)
            groups = {
                "model": [m for m in (stack.vlm, stack.head) if m is not None],
                "reduction_layers": [stack.layers[i] for i in layers],
                "other_layers": [stack.layers[i] for i in range(first, len(stack.layers)) if i not in layers],
            }
            hooks = HookClock(groups, self.device, post=[stack.vlm])
            llm = SpanClock(stack.language_model, self.device)
            try:
                seconds, out = timed_prefill(self.model, self.inputs, self.device)
            finally:
                hooks.remove()
                llm.remove()
            kv, lengths = cache_bytes(cache_from_output(out))
            visual = None if handle is None or handle.stats is None else [list(r) for r in handle.stats.visual_tokens]
        return {"seconds": seconds, "llm_seconds": llm.seconds, "hooks": dict(hooks.seconds), "hook_seconds": hooks.total,
                "kv_bytes": kv, "kv_lengths": lengths, "visual_tokens": visual}  # fmt: skip

    # decode ----------------------------------------------------------------------------------
    def generate_once(self, wrapped: bool) -> dict[str, Any]:
        with dense_or_wrapped(self.model, wrapped, self.strategy, self.options, self.compile_selection):
            return timed_generate(self.model, self.inputs, self.new_tokens, self.device)

    # training --------------------------------------------------------------------------------
    def train_once(self, wrapped: bool) -> dict[str, Any]:
        model = self.model
        with dense_or_wrapped(model, wrapped, self.strategy, self.options, self.compile_selection):
            model.zero_grad(set_to_none=True)
            sync(self.device)
            start = time.perf_counter()
            out = model(**self.train_inputs, use_cache=False)
            out.loss.backward()
            sync(self.device)
            seconds = time.perf_counter() - start
            loss = float(out.loss.detach())
            del out
        model.zero_grad(set_to_none=True)
        return {"seconds": seconds, "loss": loss}

    def train_memory(self, wrapped: bool) -> int | None:
        model = self.model

        def step() -> None:
            out = model(**self.train_inputs, use_cache=False)
            out.loss.backward()
            del out

        with dense_or_wrapped(model, wrapped, self.strategy, self.options, self.compile_selection):
            model.zero_grad(set_to_none=True)
            peak = _peak_bytes(step, self.device)
        model.zero_grad(set_to_none=True)
        return peak

    def scaling_once(self, lengths: Sequence[int]) -> dict[int, float]:
        """Dense language model alone (no tokenprune) on random embeddings of each length, timed."""
        lm = self.stack.language_model
        emb = torch.randn(
            (self.batch, max(lengths), self.shape.hidden), generator=torch.Generator().manual_seed(self.seed)
        ).to(device=self.device, dtype=next(lm.parameters()).dtype)
        times = {}
        with torch.inference_mode():
            for n in lengths:
                sync(self.device)
                start = time.perf_counter()
                lm(inputs_embeds=emb[:, :n], use_cache=False)
                sync(self.device)
                times[n] = time.perf_counter() - start
        return times

    def prefill_memory(self, wrapped: bool) -> int | None:
        def step() -> None:
            with torch.inference_mode():
                out = self.model(**self.inputs, use_cache=True, logits_to_keep=1)
            del out

        with dense_or_wrapped(self.model, wrapped, self.strategy, self.options, self.compile_selection):
            return _peak_bytes(step, self.device)


def run(
    strategy: str = "pyramiddrop",
    options: dict[str, Any] | None = None,
    *,
    shape: str | BenchShape = "llava-1.5-7b",
    scale: int | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    repeats: int = 5,
    warmup: int = 1,
    new_tokens: int = 16,
    batch: int = 1,
    threads: int | None = None,
    seed: int = 0,
    train: bool = True,
    memory: bool = True,
    scaling: bool = False,
    compile_selection: bool = False,
    progress: Callable[[str], None] | None = None,
    **shape_overrides: Any,
) -> dict[str, Any]:
    """Measure dense vs. wrapped and return JSON-ready results (see the module docstring).

    Args:
        strategy: a registered strategy name.
        options: its options (validated before the model is built).
        shape: a `SHAPES` name or a `BenchShape`.
        scale: width divisor (default 4 on CPU, 1 on CUDA; ignored for a `BenchShape`).
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:1"``...).
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (default float32 on CPU, bfloat16 on CUDA).
        repeats: timed dense/wrapped pairs per phase (medians are reported).
        warmup: untimed pairs before each phase.
        new_tokens: greedy tokens per ``generate`` (>= 2; 0 skips the decode phase).
        batch: prompts per batch (same layout, different ids).
        threads: torch intra-op threads (``None``: leave as is); restored afterwards.
        seed: weights, ids and pixels.
        train: measure the training step.
        memory: measure peak memory (a separate, untimed pass).
        scaling: also time the dense language model alone at each stage's sequence length, which gives
            the speedup this machine's kernels allow for the schedule without any tokenprune code
            (``length_scaling`` in the result).
        compile_selection: run the wrapped model's selection step compiled
            (`WrapHandle.compile_selection`); the warm-up pairs pay the compile.
        progress: called with one line per phase step (``None``: silent).
        **shape_overrides: `BenchShape` fields, e.g. ``layers=16`` or ``images=5``.
    """
    options = dict(options or {})
    strategy_obj = get_registry().build(strategy, **options)  # validate first: errors before the slow build
    if not runs_in_llm_only(strategy_obj):
        raise UnsupportedFeatureError(
            f"{strategy!r} reduces tokens in the vision encoder or at the projector, not in the LLM; the benchmark times and costs "
            "LLM-side schedules only (its FLOPs-ideal has no encoder-side term yet). Use an LLM-side strategy "
            "(`tokenprune list`)."
        )
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but torch.cuda.is_available() is False on this machine.")
    if new_tokens == 1 or new_tokens < 0:
        raise ValueError("new_tokens must be 0 (skip decode) or >= 2: decode steps are timed after the first token.")
    if isinstance(shape, str):
        shape = resolve_shape(shape, scale, device, **shape_overrides)
    elif shape_overrides:
        shape = replace(shape, **{k: v for k, v in shape_overrides.items() if v is not None})
    torch_dtype = parse_dtype(dtype, device)
    say = progress or (lambda line: None)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        say(f"building {shape.name}: {shape.layers} layers, d={shape.hidden}, m={shape.intermediate}, "
            f"{shape.heads} heads, {shape.visual_tokens} visual tokens, {str(torch_dtype).removeprefix('torch.')} "
            f"on {device}, {torch.get_num_threads()} threads")  # fmt: skip
        model = build_model(shape, device, torch_dtype, seed)
        schedule = strategy_obj.scheduler.plan(shape.layers, [shape.visual_tokens])
        runner = _Runner(model, shape, strategy, options, device, repeats, warmup, new_tokens, batch, seed, say,
                         compile_selection)  # fmt: skip
        result = _measure(runner, schedule, torch_dtype, train, memory, scaling)
        result["compile_selection"] = compile_selection
        return result
    finally:
        torch.set_num_threads(previous_threads)


def _measure(
    r: _Runner, schedule, torch_dtype: torch.dtype, train: bool, memory: bool, scaling: bool
) -> dict[str, Any]:
    shape, model = r.shape, r.model
    dims = ModelDims.from_config(model.config, name=shape.name)
    n, text = shape.visual_tokens, shape.text_tokens
    prefill_cost = estimate(dims, schedule, visual_tokens=n, text_tokens=text, lm_head_tokens=1,
                            new_tokens=r.new_tokens, kv_dtype=str(torch_dtype).removeprefix("torch."))  # fmt: skip
    llm_cost = estimate(dims, schedule, visual_tokens=n, text_tokens=text, lm_head_tokens=0)
    train_len = text + n + shape.answer_tokens
    train_cost = estimate(dims, schedule, visual_tokens=n, text_tokens=text + shape.answer_tokens,
                          lm_head_tokens=train_len)  # fmt: skip
    element = torch.tensor([], dtype=torch_dtype).element_size()
    kv_model = {
        "dense": r.batch * kv_cache_bytes(dims, [text + n] * dims.num_layers, element),
        "wrapped": r.batch * kv_cache_bytes(dims, [text + v for v in prefill_cost.visual_per_layer], element),
    }
    result: dict[str, Any] = {
        "strategy": get_registry().strategy(r.strategy).name,
        "options": r.options,
        "layers": list(schedule.layers),
        "schedule": {
            "keep": [row[0] for row in schedule.keep],
            "visual_tokens_per_layer": list(prefill_cost.visual_per_layer),
            "avg_visual_tokens": prefill_cost.average_visual_tokens,
        },
        "shape": {
            "name": shape.name,  # first, as before BenchShape extended LlavaDims
            **asdict(shape),
            "visual_tokens": n,
            "batch": r.batch,
            "dtype": str(torch_dtype).removeprefix("torch."),
            "attention": "sdpa",
            "class": type(model).__name__,
            "weights": f"random (HF init), seed {r.seed}",
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "environment": environment(r.device),
        "protocol": {
            "repeats": r.repeats,
            "warmup_pairs": r.warmup,
            "order": "alternating dense/wrapped pairs (wrapped first on odd pairs)",
            "statistic": "median",
        },
        "flops": prefill_cost.to_dict(),
    }

    # prefill
    r.say("prefill: dense vs. wrapped (one forward with use_cache=True, logits_to_keep=1)")
    dense, wrapped = r._alternate("prefill", r.prefill_once)
    d_s, w_s = median([x["seconds"] for x in dense]), median([x["seconds"] for x in wrapped])
    d_llm, w_llm = median([x["llm_seconds"] for x in dense]), median([x["llm_seconds"] for x in wrapped])
    result["prefill"] = {
        "dense_s": d_s, "wrapped_s": w_s, "speedup": ratio(d_s, w_s),
        "ideal_speedup": prefill_cost.ideal_speedup_with_vision,
        "pair_speedup_median": median([a["seconds"] / b["seconds"] for a, b in zip(dense, wrapped)]),
        "llm_dense_s": d_llm, "llm_wrapped_s": w_llm, "llm_speedup": ratio(d_llm, w_llm),
        "llm_ideal_speedup": llm_cost.ideal_speedup,
        "llm_pair_speedup_median": median([a["llm_seconds"] / b["llm_seconds"] for a, b in zip(dense, wrapped)]),
        "samples": {"dense_s": [x["seconds"] for x in dense], "wrapped_s": [x["seconds"] for x in wrapped],
                    "llm_dense_s": [x["llm_seconds"] for x in dense], "llm_wrapped_s": [x["llm_seconds"] for x in wrapped]},
        "visual_tokens_per_layer": wrapped[-1]["visual_tokens"],
    }  # fmt: skip
    result["prefill"]["ratio_to_ideal"] = result["prefill"]["speedup"] / result["prefill"]["ideal_speedup"]
    result["prefill"]["llm_ratio_to_ideal"] = result["prefill"]["llm_speedup"] / result["prefill"]["llm_ideal_speedup"]
    hook_dense = median([x["hook_seconds"] for x in dense])
    hook_wrapped = median([x["hook_seconds"] for x in wrapped])
    groups = wrapped[0]["hooks"].keys()
    result["overhead"] = {
        "method": "wall time inside tokenprune's hooks during the wrapped prefill: a timing pre-hook registered "
                  "first and one registered last on the VLM module, the head and every hooked decoder layer (and "
                  "the same around the VLM's forward hooks) bracket the engine's hooks; median over the wrapped "
                  "runs, minus the same brackets in the dense runs",
        "hook_s": hook_wrapped - hook_dense, "hook_wrapped_s": hook_wrapped, "hook_dense_s": hook_dense,
        "by_group_s": {g: median([x["hooks"][g] for x in wrapped]) for g in groups},
        "fraction_of_dense_prefill": (hook_wrapped - hook_dense) / d_s,
        "fraction_of_dense_llm_prefill": (hook_wrapped - hook_dense) / d_llm,
    }  # fmt: skip
    kv_dense, kv_wrapped = dense[-1]["kv_bytes"], wrapped[-1]["kv_bytes"]
    result["kv_cache_bytes"] = {
        "dense": kv_dense, "wrapped": kv_wrapped, "ratio": ratio(kv_dense, kv_wrapped),
        "model_dense": kv_model["dense"], "model_wrapped": kv_model["wrapped"],
        "model_ratio": ratio(kv_model["dense"], kv_model["wrapped"]),
        "dense_positions_per_layer": dense[-1]["kv_lengths"], "wrapped_positions_per_layer": wrapped[-1]["kv_lengths"],
        "method": "sum of numel x element_size of every key and value tensor of the cache returned by the prefill",
    }  # fmt: skip

    if scaling:
        result["length_scaling"] = _length_scaling(r, schedule)

    # decode
    if r.new_tokens:
        r.say(f"decode: greedy generate of {r.new_tokens} tokens, each step timed by a streamer")
        dense, wrapped = r._alternate("decode", r.generate_once)
        d_step = median([s for x in dense for s in x["steps"]])
        w_step = median([s for x in wrapped for s in x["steps"]])
        d_runs, w_runs = [median(x["steps"]) for x in dense], [median(x["steps"]) for x in wrapped]
        d_gen, w_gen = median([x["seconds"] for x in dense]), median([x["seconds"] for x in wrapped])
        result["decode"] = {
            "new_tokens": r.new_tokens, "dense_s_per_token": d_step, "wrapped_s_per_token": w_step,
            "speedup": ratio(d_step, w_step), "ideal_speedup": prefill_cost.ideal_decode_speedup,
            "pair_speedup_median": median([a / b for a, b in zip(d_runs, w_runs)]),
            "samples": {"dense_s_per_token": d_runs, "wrapped_s_per_token": w_runs},
            "generate_dense_s": d_gen, "generate_wrapped_s": w_gen, "generate_speedup": ratio(d_gen, w_gen),
            "steps_timed": {"dense": sum(len(x["steps"]) for x in dense), "wrapped": sum(len(x["steps"]) for x in wrapped)},
            "generated_tokens": wrapped[-1]["generated"],
            "method": "streamer timestamps between consecutive new tokens (steps 2..N); the prefill and first token excluded",
        }  # fmt: skip

    # training
    if train:
        r.say(f"training step: forward + backward with labels ({shape.answer_tokens} answer tokens supervised)")
        r.model.train()
        try:
            dense, wrapped = r._alternate("train", r.train_once)
        finally:
            r.model.eval()
        d_t, w_t = median([x["seconds"] for x in dense]), median([x["seconds"] for x in wrapped])
        result["train"] = {
            "dense_s": d_t, "wrapped_s": w_t, "speedup": ratio(d_t, w_t), "time_reduction": 1 - w_t / d_t,
            "ideal_speedup": train_cost.ideal_speedup_with_vision,
            "pair_speedup_median": median([a["seconds"] / b["seconds"] for a, b in zip(dense, wrapped)]),
            "loss_finite": all(math.isfinite(x["loss"]) for x in dense + wrapped),
            "sequence_length": train_len,
            "samples": {"dense_s": [x["seconds"] for x in dense], "wrapped_s": [x["seconds"] for x in wrapped]},
        }  # fmt: skip

    # memory
    if memory:
        r.say("peak memory: one untimed prefill and training step each, dense and wrapped")
        method = ("torch.cuda.max_memory_allocated above the allocation before the call"
                  if str(r.device).startswith("cuda") else
                  "peak of live CPU tensor bytes above the start, replayed from torch.profiler allocation events "
                  "(profile_memory=True); weights and tensors alive before the call excluded")  # fmt: skip
        mem: dict[str, Any] = {"method": method}
        d_p, w_p = r.prefill_memory(False), r.prefill_memory(True)
        mem["prefill"] = {"dense_bytes": d_p, "wrapped_bytes": w_p, "ratio": ratio(d_p or 0, w_p or 0)}
        if train:
            r.model.train()
            try:
                d_p, w_p = r.train_memory(False), r.train_memory(True)
            finally:
                r.model.eval()
            grads = sum(p.numel() * p.element_size() for p in r.model.parameters() if p.requires_grad)
            mem["train"] = {
                "dense_bytes": d_p, "wrapped_bytes": w_p, "ratio": ratio(d_p or 0, w_p or 0),
                "parameter_grad_bytes": grads,
                "note": "includes the parameter gradients (the same dense and wrapped); the rest is activations",
                "activation_ratio": ratio((d_p or 0) - grads, (w_p or 0) - grads),
            }  # fmt: skip
        result["memory"] = mem

    result["metrics"] = _metrics(result)
    return result


def _length_scaling(r: _Runner, schedule) -> dict[str, Any]:
    """Achievable LLM prefill speedup on this machine: the dense stack timed at each stage's length.

    ``sum over stages of (layers in stage / all layers) x T(stage length)`` is what the reduced stack
    would take if every layer ran as fast as the dense model does at that length and nothing else
    were added; its ratio to ``T(full length)`` is the speedup the kernels allow (the FLOPs-ideal
    assumes time proportional to FLOPs, which small matmuls do not reach).
    """
    text, layers = r.shape.text_tokens, r.shape.layers
    visual = [row[0] for row in schedule.tokens_per_layer()]
    counts: dict[int, int] = {}
    for v in visual:
        counts[text + v] = counts.get(text + v, 0) + 1
    lengths = sorted(counts, reverse=True)
    r.say(f"length scaling: dense language model alone at lengths {', '.join(map(str, lengths))}")
    samples: dict[int, list[float]] = {n: [] for n in lengths}
    r.scaling_once(lengths)  # warm-up
    for i in range(r.repeats):
        order = lengths if i % 2 == 0 else lengths[::-1]
        times = r.scaling_once(order)
        for n in lengths:
            samples[n].append(times[n])
        r.say(f"length scaling: {i + 1}/{r.repeats}  " + "  ".join(f"{n}: {times[n]:.3f}s" for n in lengths))
    med = {n: median(samples[n]) for n in lengths}
    full = med[lengths[0]]
    reduced = sum(counts[n] / layers * med[n] for n in lengths)
    return {
        "method": "dense language model alone (no tokenprune hooks) on random embeddings of each stage length; "
        "achievable = T(full) / sum(layers_in_stage / layers x T(stage length)); medians",
        "layers_per_length": {str(n): counts[n] for n in lengths},
        "seconds": {str(n): med[n] for n in lengths},
        "seconds_per_token": {str(n): med[n] / (n * r.batch) for n in lengths},
        "samples": {str(n): samples[n] for n in lengths},
        "achievable_speedup": full / reduced,
    }


def _metrics(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Measured vs. ideal speedups (dense / wrapped), one row per metric, for tables and the plot."""
    rows = [
        {"metric": "prefill (whole forward)", "measured": result["prefill"]["speedup"],
         "ideal": result["prefill"]["ideal_speedup"]},
        {"metric": "prefill (language model)", "measured": result["prefill"]["llm_speedup"],
         "ideal": result["prefill"]["llm_ideal_speedup"]},
    ]  # fmt: skip
    if "decode" in result:
        rows.append({"metric": "decode (per token)", "measured": result["decode"]["speedup"],
                     "ideal": result["decode"]["ideal_speedup"]})  # fmt: skip
    if "train" in result:
        rows.append({"metric": "training step", "measured": result["train"]["speedup"],
                     "ideal": result["train"]["ideal_speedup"]})  # fmt: skip
    kv = result["kv_cache_bytes"]
    rows.append({"metric": "KV cache bytes", "measured": kv["ratio"], "ideal": kv["model_ratio"]})
    mem = result.get("memory", {})
    for phase in ("prefill", "train"):
        if phase in mem and mem[phase]["dense_bytes"]:
            rows.append({"metric": f"peak memory ({phase})", "measured": mem[phase]["ratio"], "ideal": None})
    if "train" in mem and mem["train"].get("activation_ratio"):
        rows.append(
            {"metric": "peak memory (train, w/o grads)", "measured": mem["train"]["activation_ratio"], "ideal": None}
        )
    for row in rows:
        ideal = row["ideal"]
        row["ratio_to_ideal"] = row["measured"] / ideal if ideal else None
    return rows


def plot(result: dict[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Bar chart of measured vs. FLOPs-ideal speedup per metric (PNG, matplotlib Agg backend).

    ``title`` replaces the default one, which names the image benchmark's schedule and shape
    (`tokenprune.tools.bench_video` results pass their own).
    """
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError('The plot needs matplotlib: pip install "tokenprune-vlm[bench]".') from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["metrics"]
    labels = [row["metric"] for row in rows]
    x = range(len(rows))
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(7.0, 1.25 * len(rows) + 2), 4.6))
    measured = [row["measured"] for row in rows]
    ideal = [row["ideal"] if row["ideal"] is not None else 0.0 for row in rows]
    bars_m = ax.bar([i - width / 2 for i in x], measured, width, label="measured", color="#3f51b5")
    bars_i = ax.bar([i + width / 2 for i in x], ideal, width, label="FLOPs-ideal / model", color="#bdbdbd")
    for bars, values in ((bars_m, measured), (bars_i, [row["ideal"] for row in rows])):
        for bar, value in zip(bars, values):
            if value:
                ax.annotate(f"{value:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")  # fmt: skip
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=9)
    ax.set_ylabel("dense / wrapped (higher is better)")
    shape, env = result["shape"], result["environment"]
    threads = env.get("torch_threads")
    if title is None:
        title = (
            f"{result['strategy']} {_layers_text(result['layers'])} on {shape['name']} ({shape['layers']} layers, "
            f"d={shape['hidden']}, {shape['visual_tokens']} visual tokens), {shape['dtype']}, "
            f"{env['device']}, {threads} thread{'s' if threads != 1 else ''}"
        )
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _layers_text(layers: Sequence[int]) -> str:
    return f"(drop before layers {', '.join(map(str, layers))})" if layers else "(no reduction)"


def stderr_progress(line: str) -> None:
    """The CLI's progress printer: one line per step, on stderr, prefixed ``[bench]``."""
    print(f"[bench] {line}", file=sys.stderr, flush=True)
