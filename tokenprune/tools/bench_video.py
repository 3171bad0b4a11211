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

Models are built per family here, keyed by preset name as `tokenprune.video_cost` keys its layouts
(a benchmark tool constructing stock classes, not the library dispatching on a loaded model).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from ..api import pruned
from ..cost import ModelDims, kv_cache_bytes
from ..registry import get_registry
from ..video_cost import VideoShape, video_cost, video_grid
from .bench import _SpanClock, _cache_bytes, _dtype, _environment, _median, _ratio, _short
from .clocks import StepStreamer, sync

__all__ = ["VIDEO_SHAPES", "VideoBenchShape", "resolve_video_shape", "build_video_model", "build_video_inputs",
           "run_video", "render_video_bench", "is_video_shape"]  # fmt: skip

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
VIDEO_SHAPES = ("qwen2-vl-7b", "qwen2.5-vl-7b", "llava-onevision-7b")
"""Presets the video benchmark builds (`tokenprune.cost.PRESETS` names with a `tokenprune.video_cost` layout)."""
TEXT_BEFORE = 0.35
"""Share of the prompt's text before the video (system prompt and chat template), the question after it."""


def is_video_shape(name: str) -> bool:
    """Whether ``name`` is a preset the video benchmark builds."""
    return name.lower() in VIDEO_SHAPES


@dataclass(frozen=True, kw_only=True)
class VideoBenchShape:
    """A video-family model (widths possibly scaled) and the video of its one prompt.

    The vision tower is the family's (Qwen2-VL ViT, Qwen2.5-VL window ViT, SigLIP for OneVision)
    at the same width divisor as the LLM; ``video`` is the raw frames as the user has them.
    """

    name: str
    family: str
    video: VideoShape
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    vision_layers: int
    vision_hidden: int
    vision_intermediate: int
    vision_heads: int
    text_tokens: int = 64

    @property
    def grid(self) -> tuple[int, int, int]:
        """``(frames, rows, cols)`` of merged video tokens the LLM receives (`tokenprune.video_cost.video_grid`)."""
        return video_grid(self.family, self.video).grid

    @property
    def visual_tokens(self) -> int:
        """Placeholders of the video in the prompt (OneVision: the grid plus its newline feature)."""
        return video_grid(self.family, self.video).tokens


def _heads(width: int, head_dim: int = 64) -> int:
    """Heads of about ``head_dim`` channels that divide ``width`` (as `tokenprune.tools.bench.BenchShape.scaled`)."""
    heads = max(1, width // head_dim)
    while width % heads:
        heads -= 1
    return heads


def resolve_video_shape(
    name: str, video: str | VideoShape, scale: int | None = None, device: str = "cpu", **overrides: Any
) -> VideoBenchShape:
    """The preset's LLM and tower, widths divided by ``scale`` (default 4 on CPU, 1 on CUDA), and the video.

    Raises:
        ValueError: an unknown preset, a video the family cannot take (a temporal patch on OneVision),
            frames that do not fill whole temporal patches, or inconsistent head counts.
    """
    key = name.lower()
    if key not in VIDEO_SHAPES:
        raise ValueError(f"Unknown video benchmark shape {name!r}; video shapes: {', '.join(VIDEO_SHAPES)}.")
    shape = VideoShape.parse(video) if isinstance(video, str) else video
    family = key.rsplit("-", 1)[0]
    video_grid(family, shape)  # a temporal patch on OneVision fails here
    if family.startswith("qwen"):
        patch = shape.temporal_patch or 2
        if shape.frames % patch:
            raise ValueError(
                f"{shape.frames} frames do not fill whole temporal patches of {patch} frames: the benchmark feeds the "
                f"tower exact frames, so give a multiple of {patch} (e.g. {shape.frames + patch - shape.frames % patch})."
            )
        if shape.frames // patch < 2:
            raise ValueError(f"a video needs at least two temporal patches ({2 * patch} frames); got {shape.frames}.")
    dims = ModelDims.preset(key)
    vision = dims.vision
    assert vision is not None  # every video preset models its tower
    if scale is None:
        scale = 1 if not str(device).startswith("cpu") else 4
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}.")
    hidden, v_hidden = dims.hidden_size // scale, vision.hidden_size // scale
    heads = dims.num_heads if scale == 1 else _heads(hidden)
    kv = dims.num_kv_heads if scale == 1 else max(1, heads * dims.num_kv_heads // dims.num_heads)
    while heads % kv:
        kv -= 1
    out = VideoBenchShape(
        name=key if scale == 1 else f"{key}/{scale}", family=family, video=shape, layers=dims.num_layers,
        hidden=hidden, intermediate=dims.intermediate_size // scale, heads=heads, kv_heads=kv,
        vocab=dims.vocab_size or 152064, vision_layers=vision.num_layers, vision_hidden=v_hidden,
        vision_intermediate=vision.intermediate_size // scale,
        vision_heads=vision.num_heads if scale == 1 else _heads(v_hidden),
    )  # fmt: skip
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(changes) - set(VideoBenchShape.__dataclass_fields__)
    if unknown:
        raise ValueError(f"Unknown video shape fields {sorted(unknown)}.")
    out = replace(out, **changes)
    if "heads" in changes and "kv_heads" not in changes:
        out = replace(out, kv_heads=min(out.kv_heads, out.heads))
    if out.hidden % out.heads or out.heads % out.kv_heads or (out.hidden // out.heads) % 2:
        raise ValueError(f"hidden={out.hidden} must split into heads={out.heads} of an even width, and heads into "
                         f"kv_heads={out.kv_heads}.")  # fmt: skip
    return out


# -- models ---------------------------------------------------------------------------------
def _token_ids(shape: VideoBenchShape) -> dict[str, int]:
    """Placeholder and delimiter ids at the top of the vocabulary; random text takes ids below them."""
    v = shape.vocab
    return {"video": v - 1, "image": v - 2, "start": v - 3, "end": v - 4}


def _text_config(shape: VideoBenchShape, max_positions: int) -> dict[str, Any]:
    return dict(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        max_position_embeddings=max_positions, rms_norm_eps=1e-6, pad_token_id=PAD_ID, bos_token_id=BOS_ID,
        eos_token_id=EOS_ID, tie_word_embeddings=False,
    )  # fmt: skip


def _mrope(shape: VideoBenchShape) -> dict[str, Any]:
    """M-RoPE (t, h, w) sections in Qwen2-VL's proportions (16, 24, 24 of 64 frequencies)."""
    half = shape.hidden // shape.heads // 2
    hw = half * 3 // 8
    return {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [half - 2 * hw, hw, hw]}


def _qwen_ids(shape: VideoBenchShape) -> dict[str, Any]:
    ids = _token_ids(shape)
    return dict(image_token_id=ids["image"], video_token_id=ids["video"], vision_start_token_id=ids["start"],
                vision_end_token_id=ids["end"], tie_word_embeddings=False)  # fmt: skip


def _qwen2_vl(shape: VideoBenchShape, max_positions: int):
    from transformers import Qwen2VLConfig

    vision = dict(
        depth=shape.vision_layers, embed_dim=shape.vision_hidden, num_heads=shape.vision_heads,
        mlp_ratio=max(1, round(shape.vision_intermediate / shape.vision_hidden)), in_channels=3, patch_size=14,
        temporal_patch_size=shape.video.temporal_patch or 2, spatial_merge_size=2, hidden_size=shape.hidden,
    )  # fmt: skip
    text = {**_text_config(shape, max_positions), "rope_parameters": _mrope(shape)}
    return Qwen2VLConfig(text_config=text, vision_config=vision, **_qwen_ids(shape))


def _qwen2_5_vl(shape: VideoBenchShape, max_positions: int):
    from transformers import Qwen2_5_VLConfig

    depth = shape.vision_layers
    vision = dict(
        depth=depth, hidden_size=shape.vision_hidden, intermediate_size=shape.vision_intermediate,
        num_heads=shape.vision_heads, in_channels=3, patch_size=14, temporal_patch_size=shape.video.temporal_patch or 2,
        spatial_merge_size=2, out_hidden_size=shape.hidden, window_size=112, tokens_per_second=2,
        fullatt_block_indexes=[i for i in range(depth) if i % 8 == 7 or i == depth - 1],  # 7, 15, 23, 31 at depth 32
    )  # fmt: skip
    text = {**_text_config(shape, max_positions), "rope_parameters": _mrope(shape)}
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **_qwen_ids(shape))


def _onevision(shape: VideoBenchShape, max_positions: int):
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    ids = _token_ids(shape)
    vision = SiglipVisionConfig(
        hidden_size=shape.vision_hidden, intermediate_size=shape.vision_intermediate,
        num_hidden_layers=shape.vision_layers, num_attention_heads=shape.vision_heads, image_size=384, patch_size=14,
        vision_use_head=False,
    )  # fmt: skip
    text = Qwen2Config(**_text_config(shape, max_positions))
    return LlavaOnevisionConfig(
        vision_config=vision, text_config=text, image_token_index=ids["image"], video_token_index=ids["video"],
        vision_feature_layer=-1, vision_feature_select_strategy="full", tie_word_embeddings=False,
    )  # fmt: skip


_CONFIGS = {"qwen2-vl": _qwen2_vl, "qwen2.5-vl": _qwen2_5_vl, "llava-onevision": _onevision}
_CLASSES = {"qwen2-vl": "Qwen2VLForConditionalGeneration", "qwen2.5-vl": "Qwen2_5_VLForConditionalGeneration",
            "llava-onevision": "LlavaOnevisionForConditionalGeneration"}  # fmt: skip


def build_video_model(
    shape: VideoBenchShape, device: str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> nn.Module:
    """A random-weight stock model of the shape's family (transformers' init, SDPA), in eval mode, on ``device``."""
    import transformers

    length = shape.text_tokens + shape.visual_tokens + 1024
    config = _CONFIGS[shape.family](shape, max(4096, length))
    config._attn_implementation = "sdpa"  # the setter reaches the text and vision sub-configs
    torch.manual_seed(seed)
    with torch.device(device):
        model = getattr(transformers, _CLASSES[shape.family])._from_config(config, dtype=dtype)
    model.eval()
    gen = model.generation_config
    gen.pad_token_id, gen.bos_token_id, gen.eos_token_id = PAD_ID, BOS_ID, EOS_ID
    return model


def build_video_inputs(shape: VideoBenchShape, seed: int = 0, device: str = "cpu") -> dict[str, torch.Tensor]:
    """One prompt ``[text, <video>, question]`` with random frames, as the family's processor lays it out.

    Qwen: ``<|vision_start|>``, the ``T x h x w`` placeholders, ``<|vision_end|>`` (both delimiters
    count as text), patch rows ``(T*2h*2w, 3*t*14*14)`` and ``video_grid_thw``; OneVision: the
    placeholders (grid and newline) and ``(1, F, 3, 384, 384)`` frames.
    """
    gen = torch.Generator().manual_seed(seed)
    ids = _token_ids(shape)
    grid = video_grid(shape.family, shape.video)
    qwen = shape.family.startswith("qwen")
    text = shape.text_tokens - (2 if qwen else 0)
    if text < 2:
        raise ValueError(f"text_tokens={shape.text_tokens} leaves no text around the video; give at least {4 if qwen else 2}.")
    before = max(1, round(text * TEXT_BEFORE))
    words = torch.randint(3, shape.vocab - 4, (text,), generator=gen)
    video = torch.full((shape.visual_tokens,), ids["video"])
    if qwen:
        video = torch.cat([torch.tensor([ids["start"]]), video, torch.tensor([ids["end"]])])
    input_ids = torch.cat([words[:before], video, words[before:]])[None]
    inputs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    if qwen:
        t, rows, cols = grid.grid
        patch = shape.video.temporal_patch or 2
        inputs["pixel_values_videos"] = torch.randn((t * 4 * rows * cols, 3 * patch * 14 * 14), generator=gen)
        inputs["video_grid_thw"] = torch.tensor([[t, 2 * rows, 2 * cols]])
        inputs["mm_token_type_ids"] = 2 * (input_ids == ids["video"]).long()
        if shape.family == "qwen2.5-vl":
            inputs["second_per_grid_ts"] = torch.tensor([1.0])
    else:
        inputs["pixel_values_videos"] = torch.randn((1, shape.video.frames, 3, 384, 384), generator=gen)
    return {k: v.to(device) for k, v in inputs.items()}


# -- measurement ----------------------------------------------------------------------------
class _VideoRunner:
    """The model, the prompt and the protocol of one run (as `tokenprune.tools.bench._Runner`, prefill and decode only)."""

    def __init__(self, model, inputs, strategy, options, device, repeats, warmup, new_tokens, say):
        self.model, self.inputs, self.strategy, self.options = model, inputs, strategy, options
        self.device, self.repeats, self.warmup, self.new_tokens, self.say = device, repeats, warmup, new_tokens, say
        self.stack = get_registry().adapter_for(model).locate(model)

    def alternate(self, phase: str, once: Callable[[bool], dict[str, Any]]) -> tuple[list[dict], list[dict]]:
        """Warm-up pairs, then ``repeats`` dense/wrapped pairs in alternation; wrapped first on odd pairs."""
        for i in range(self.warmup):
            self.say(f"{phase}: warm-up {i + 1}/{self.warmup}")
            once(False)
            once(True)
        dense, wrapped = [], []
        for i in range(self.repeats):
            for is_wrapped in (False, True) if i % 2 == 0 else (True, False):
                (wrapped if is_wrapped else dense).append(once(is_wrapped))
            self.say(f"{phase}: pair {i + 1}/{self.repeats}  dense {_short(dense[-1])}  wrapped {_short(wrapped[-1])}")
        return dense, wrapped

    def _mode(self, wrapped: bool):
        if wrapped:
            return pruned(self.model, self.strategy, **self.options)
        return _Dense()

    def prefill_once(self, wrapped: bool) -> dict[str, Any]:
        with self._mode(wrapped) as handle:
            llm = _SpanClock(self.stack.language_model, self.device)
            try:
                with torch.inference_mode():
                    sync(self.device)
                    start = time.perf_counter()
                    out = self.model(**self.inputs, use_cache=True, logits_to_keep=1)
                    sync(self.device)
                    seconds = time.perf_counter() - start
            finally:
                llm.remove()
            from ..engine.compat import cache_from_output

            kv, lengths = _cache_bytes(cache_from_output(out))
            per_layer = handle.tokens_per_layer() if handle is not None else None
        return {"seconds": seconds, "llm_seconds": llm.seconds, "kv_bytes": kv, "kv_lengths": lengths,
                "tokens": per_layer}  # fmt: skip

    def generate_once(self, wrapped: bool) -> dict[str, Any]:
        streamer = StepStreamer(self.device)
        n = self.new_tokens
        with self._mode(wrapped), torch.inference_mode():
            sync(self.device)
            start = time.perf_counter()
            out = self.model.generate(**self.inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, streamer=streamer)
            sync(self.device)
            total = time.perf_counter() - start
        return {"seconds": total, "steps": streamer.steps,
                "generated": int(out.shape[1] - self.inputs["input_ids"].shape[1])}  # fmt: skip


class _Dense:
    """The dense side of a pair: no wrapping, no handle."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


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
        strategy, options: a registered strategy and its options (validated before the model is built).
        shape: a `VIDEO_SHAPES` preset or a `VideoBenchShape`.
        video: ``"FxHxW"`` or ``"FxHxWxT"`` (T: temporal patch), or a `VideoShape` (ignored for a `VideoBenchShape`).
        scale: width divisor (default 4 on CPU, 1 on CUDA).
        device, dtype: where and in what precision (default float32 on CPU, bfloat16 on CUDA).
        repeats, warmup: timed and untimed dense/wrapped pairs per phase.
        new_tokens: greedy tokens per ``generate`` (>= 2; 0 skips decode).
        threads: torch intra-op threads (``None``: as is; restored afterwards).
        seed: weights, ids and frames.
        progress: called with one line per step (``None``: silent).
        **shape_overrides: `VideoBenchShape` fields (``layers=8``, ``vision_layers=4``, ``text_tokens=32``...).

    Raises:
        ValueError: a bad shape or video, ``new_tokens == 1``.
        tokenprune.errors.TokenpruneError: the strategy cannot run on this family (e.g. a temporal
            strategy on LLaVA-OneVision), raised by the first wrapped forward, before any timing.
    """
    options = dict(options or {})
    built = get_registry().build(strategy, **options)  # invalid options fail before the slow build
    if new_tokens == 1 or new_tokens < 0:
        raise ValueError("new_tokens must be 0 (skip decode) or >= 2: decode steps are timed after the first token.")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but torch.cuda.is_available() is False on this machine.")
    if isinstance(shape, str):
        shape = resolve_video_shape(shape, video, scale, device, **shape_overrides)
    torch_dtype = _dtype(dtype, device)
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
        "environment": _environment(r.device),
        "protocol": {"repeats": r.repeats, "warmup_pairs": r.warmup,
                     "order": "alternating dense/wrapped pairs (wrapped first on odd pairs)", "statistic": "median"},
        "flops": cost,
    }  # fmt: skip

    r.say("prefill (TTFT): dense vs. wrapped (one forward with use_cache=True, logits_to_keep=1)")
    dense, wrapped = r.alternate("prefill", r.prefill_once)
    d_s, w_s = _median([x["seconds"] for x in dense]), _median([x["seconds"] for x in wrapped])
    d_llm, w_llm = _median([x["llm_seconds"] for x in dense]), _median([x["llm_seconds"] for x in wrapped])
    result["prefill"] = {
        "dense_s": d_s, "wrapped_s": w_s, "speedup": _ratio(d_s, w_s),
        "ideal_speedup": cost["with_vision"]["ideal_speedup"],
        "llm_dense_s": d_llm, "llm_wrapped_s": w_llm, "llm_speedup": _ratio(d_llm, w_llm), "llm_ideal_speedup": llm_only,
        "samples": {"dense_s": [x["seconds"] for x in dense], "wrapped_s": [x["seconds"] for x in wrapped],
                    "llm_dense_s": [x["llm_seconds"] for x in dense], "llm_wrapped_s": [x["llm_seconds"] for x in wrapped]},
        "tokens_per_layer": wrapped[-1]["tokens"],
    }  # fmt: skip
    kv_d, kv_w = dense[-1]["kv_bytes"], wrapped[-1]["kv_bytes"]
    element = torch.tensor([], dtype=torch_dtype).element_size()
    model_d = kv_cache_bytes(dims, [text + shape.visual_tokens] * dims.num_layers, element)
    model_w = kv_cache_bytes(dims, [text + v for v in cost["visual_tokens_per_layer"]], element)
    result["kv_cache_bytes"] = {"dense": kv_d, "wrapped": kv_w, "ratio": _ratio(kv_d, kv_w), "model_dense": model_d,
                                "model_wrapped": model_w, "model_ratio": _ratio(model_d, model_w)}  # fmt: skip
    if r.new_tokens:
        r.say(f"decode (TPOT): greedy generate of {r.new_tokens} tokens, each step timed by a streamer")
        dense, wrapped = r.alternate("decode", r.generate_once)
        d_step = _median([s for x in dense for s in x["steps"]])
        w_step = _median([s for x in wrapped for s in x["steps"]])
        result["decode"] = {
            "new_tokens": r.new_tokens, "dense_s_per_token": d_step, "wrapped_s_per_token": w_step,
            "speedup": _ratio(d_step, w_step),
            "ideal_speedup": _ratio(cost["decode"]["dense_tflops"], cost["decode"]["pruned_tflops"]),
            "samples": {"dense_s_per_token": [_median(x["steps"]) for x in dense],
                        "wrapped_s_per_token": [_median(x["steps"]) for x in wrapped]},
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
