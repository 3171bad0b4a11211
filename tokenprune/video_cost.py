"""The cost of a video prompt: visual tokens of a video shape, and FLOPs dense vs. a strategy.

A video of ``frames`` frames at ``height x width`` px becomes LLM visual tokens per family. The family
adapter lays it out from the model's config (`Adapter.video_grid`: patch size, merge factor, temporal
patch, tower image size), so a local checkpoint is costed as it runs; a preset uses its family's default
config. With the defaults:

* **Qwen2-VL / Qwen2.5-VL / Qwen3-VL** (patch 16 there): the processor rounds each side to a multiple of ``patch * merge`` (28 px)
  and pads the frame count to a multiple of the temporal patch (2); the tower makes
  ``frames/2 x height/14 x width/14`` patches and the 2x2 merger a ``T x h x w`` grid of tokens
  (``T = frames/2``, ``h = height/28``, ``w = width/28``). Each temporal patch is one attention
  sequence of the tower (Qwen2-VL attends within a frame; Qwen2.5-VL's windows are cheaper still, not
  modelled).
* **LLaVA-OneVision**: every frame is resized to the tower's 384 px (27 x 27 SigLIP patches, each its
  own encoder sequence), projected, then 2x2 bilinear-pooled to ``ceil(27/2)^2 = 196`` tokens; one
  newline feature ends the video. No temporal patch.

`video_cost` then costs the LLM prefill (both conventions of `tokenprune.cost`) dense and under a
strategy: a projector-side selection (the temporal strategies; `ProjectorSelection.kept_count` on
the video's grid) shrinks what the LLM receives, an LLM-side schedule is planned on what it receives.
The vision encoder runs on every frame either way.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .cost import (
    PRESETS,
    ModelDims,
    decode_flops,
    full_layer_flops,
    kv_cache_bytes,
    lm_head_flops,
    paper_flops,
)
from .interfaces import Strategy
from .video_layout import VideoGrid, VideoShape
from .vision_language import VisionLanguageStrategy

__all__ = ["VideoShape", "VideoGrid", "video_config", "video_grid", "video_cost", "render_video_cost"]


def video_config(model: str | Any) -> Any | None:
    """The transformers config that lays out ``model``'s videos.

    ``model`` is a config (returned as is), a cost-model preset name (its family's default config,
    e.g. ``"qwen2.5-vl-7b"``), or a local model directory / ``config.json`` (read without downloading).
    ``None`` for a preset of a family without videos.

    Raises:
        ValueError: neither a preset nor a readable local config.
    """
    if not isinstance(model, str):
        return model
    from transformers import AutoConfig

    from .registry import get_registry

    key = model.lower()
    for spec in get_registry().adapters.values():
        for prefix, model_type in spec.adapter.preset_types.items():
            if key.startswith(prefix):
                return AutoConfig.for_model(model_type)
    if key in PRESETS:
        return None
    path = Path(model).expanduser()
    if not path.exists():
        raise ValueError(
            f"{model!r} is neither a model preset ({', '.join(PRESETS)}) nor an existing local path "
            "(a directory with config.json, or a config.json file)."
        )
    try:
        return AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise ValueError(f"Could not read a transformers config from {path}: {exc}") from None


def video_grid(model: str | Any, shape: VideoShape) -> VideoGrid:
    """The LLM-side grid of ``shape`` on a model (a preset name, a local checkpoint or a config).

    The layout is the family adapter's (`Adapter.video_grid`), read from the model's config, so a
    local checkpoint with another patch size or merge factor is costed as it will run.

    Raises:
        ValueError: the model takes no video (the message names the families that do).
    """
    from .registry import get_registry

    config = video_config(model)
    adapter = get_registry().adapter_for_config(config) if config is not None else None
    grid = adapter.video_grid(config, shape) if adapter is not None else None
    if grid is None:
        name = model if isinstance(model, str) else getattr(config, "model_type", type(config).__name__)
        raise ValueError(
            f"{name!r} takes no video in the cost model; video layouts are known for Qwen2-VL / Qwen2.5-VL / Qwen3-VL "
            "and LLaVA-OneVision (presets qwen2-vl-7b, qwen2.5-vl-7b, llava-onevision-7b, or their checkpoints)."
        )
    return grid


def _vision_flops(dims: ModelDims, grid: VideoGrid) -> float:
    vision = dims.vision
    if vision is None:
        return 0.0
    h, m = vision.hidden_size, vision.intermediate_size
    encoder = sum(4 * s * h * h + 2 * s * s * h + vision.mlp_matrices * s * h * m for s in grid.encoder_sequences)
    # Qwen: the merger's MLP runs on merged tokens; OneVision: the projector on every patch, before pooling
    projector = sum(grid.projector_tokens * i * o for i, o in vision.projector)
    return vision.num_layers * encoder + projector


def video_cost(
    dims: ModelDims,
    model: str,
    shape: VideoShape,
    strategy: Strategy | VisionLanguageStrategy | None = None,
    *,
    text_tokens: int | None = None,
    new_tokens: int = 0,
    kv_dtype: str = "bfloat16",
) -> dict[str, Any]:
    """Dense vs. ``strategy`` cost of one prompt holding one video of ``shape`` (JSON-ready).

    Args:
        dims: the model shape (`ModelDims.preset`, `ModelDims.load`).
        model: what lays out the video (`video_grid`): a preset name, a local checkpoint or a config.
        shape: the video.
        strategy: a built strategy (``get_registry().build(name, **options)``) or ``None`` (dense only).
        text_tokens: text tokens of the prompt (default ``dims.text_tokens``).
        new_tokens: decode steps to cost.
        kv_dtype: KV-cache dtype for the bytes.

    Example:
        ```pycon
        >>> from tokenprune.cost import ModelDims
        >>> from tokenprune.registry import get_registry
        >>> from tokenprune.video_cost import VideoShape, video_cost
        >>> cost = video_cost(ModelDims.preset("qwen2.5-vl-7b"), "qwen2.5-vl-7b", VideoShape(32, 448, 448),
        ...                   get_registry().build("evs", ratio=0.5))
        >>> cost["visual_tokens"], cost["llm_visual_tokens"]
        (4096, 2048)
        ```
    """
    grid = video_grid(model, shape)
    n = grid.tokens
    text = dims.text_tokens if text_tokens is None else text_tokens
    projector = getattr(strategy, "projector", None)
    llm = strategy.llm if isinstance(strategy, VisionLanguageStrategy) else strategy
    if isinstance(strategy, VisionLanguageStrategy) and strategy.encoder is not None:
        raise ValueError("Encoder-side reduction (inside the vision tower) is not costed for videos.")
    kept = n if projector is None else projector.kept_count(n - grid.extra, grid.grid) + grid.extra
    layers = dims.num_layers
    schedule = llm.scheduler.plan(layers, [kept]) if llm is not None else None
    visual = [row[0] for row in schedule.tokens_per_layer()] if schedule is not None else [kept] * layers
    dense_visual = [n] * layers
    dense_tokens, tokens = [text + v for v in dense_visual], [text + v for v in visual]
    head = bool(dims.vocab_size)
    full_dense = sum(full_layer_flops(dims, t) for t in dense_tokens) + lm_head_flops(dims, 1)
    full_pruned = sum(full_layer_flops(dims, t) for t in tokens) + lm_head_flops(dims, 1)
    vision = _vision_flops(dims, grid)
    t = 1e12
    return {
        "model": model if isinstance(model, str) else getattr(model, "model_type", None), "video": {"frames": shape.frames, "height": shape.height, "width": shape.width,
                                  "temporal_patch": shape.temporal_patch},
        "grid": list(grid.grid), "extra_tokens": grid.extra, "visual_tokens": n, "llm_visual_tokens": kept,
        "text_tokens": text, "strategy": getattr(strategy, "name", None),
        "visual_tokens_per_layer": visual, "avg_visual_tokens": sum(visual) / layers,
        "paper": {"dense_tflops": paper_flops(dims, dense_visual) / t, "pruned_tflops": paper_flops(dims, visual) / t},
        "full": {"dense_tflops": full_dense / t, "pruned_tflops": full_pruned / t,
                 "ideal_speedup": full_dense / full_pruned if full_pruned else math.inf},
        "vision_tflops": vision / t,
        "with_vision": {"dense_tflops": (full_dense + vision) / t, "pruned_tflops": (full_pruned + vision) / t,
                        "ideal_speedup": (full_dense + vision) / (full_pruned + vision)},
        "decode": {"dense_tflops": decode_flops(dims, dense_tokens, new_tokens, lm_head=head) / t,
                   "pruned_tflops": decode_flops(dims, tokens, new_tokens, lm_head=head) / t},
        "kv_cache_bytes": {"dense": kv_cache_bytes(dims, [x + new_tokens for x in dense_tokens], kv_dtype),
                           "pruned": kv_cache_bytes(dims, [x + new_tokens for x in tokens], kv_dtype), "dtype": kv_dtype},
        "units": "TFLOPs count multiply-accumulates (1e12), as the papers do",
    }  # fmt: skip


def render_video_cost(d: dict[str, Any]) -> str:
    """A short text table of `video_cost`'s result."""
    v = d["video"]
    lines = [
        f"{d['model']}: video {v['frames']} frames {v['height']}x{v['width']} px -> grid {d['grid'][0]}x{d['grid'][1]}x"
        f"{d['grid'][2]}{' + ' + str(d['extra_tokens']) if d['extra_tokens'] else ''} = {d['visual_tokens']} visual tokens",
        f"strategy: {d['strategy'] or 'dense'}; the LLM receives {d['llm_visual_tokens']} visual tokens, "
        f"{d['avg_visual_tokens']:.0f} per layer on average",
        f"{'':38}{'dense':>10}{'pruned':>10}",
        f"{'paper: prefill, visual tokens only':38}{d['paper']['dense_tflops']:>10.2f}{d['paper']['pruned_tflops']:>10.2f}",
        f"{'full: LLM prefill':38}{d['full']['dense_tflops']:>10.2f}{d['full']['pruned_tflops']:>10.2f}"
        f"   ideal {d['full']['ideal_speedup']:.2f}x",
        f"{'full + vision encoder and projector':38}{d['with_vision']['dense_tflops']:>10.2f}"
        f"{d['with_vision']['pruned_tflops']:>10.2f}   ideal {d['with_vision']['ideal_speedup']:.2f}x",
    ]
    return "\n".join(lines)
