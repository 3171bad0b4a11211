"""The cost of a video prompt: visual tokens of a video shape, and FLOPs dense vs. a strategy.

A video of ``frames`` frames at ``height x width`` px becomes LLM visual tokens per family:

* **Qwen2-VL / Qwen2.5-VL**: the processor rounds each side to a multiple of ``patch * merge`` (28 px)
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
from dataclasses import dataclass
from typing import Any

from .vision_language import VisionLanguageStrategy
from .cost import ModelDims, decode_flops, full_layer_flops, kv_cache_bytes, lm_head_flops, paper_flops
from .interfaces import Strategy

__all__ = ["VideoShape", "VideoGrid", "video_grid", "video_cost", "VIDEO_FAMILIES", "render_video_cost"]


@dataclass(frozen=True)
class VideoShape:
    """A video as the user has it: raw frames and their size in pixels.

    Attributes:
        frames: raw frames sampled from the video.
        height, width: frame size in pixels (before the processor's resizing).
        temporal_patch: frames per temporal patch (``None``: the family's own; Qwen 2, OneVision 1).
    """

    frames: int
    height: int
    width: int
    temporal_patch: int | None = None

    def __post_init__(self) -> None:
        for name in ("frames", "height", "width"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"VideoShape.{name} must be a positive integer, got {getattr(self, name)!r}.")
        if self.temporal_patch is not None and self.temporal_patch < 1:
            raise ValueError(f"VideoShape.temporal_patch must be >= 1, got {self.temporal_patch}.")

    @classmethod
    def parse(cls, text: str) -> VideoShape:
        """``"32x448x448"`` (frames x height x width) or ``"32x448x448x2"`` (and a temporal patch)."""
        parts = text.lower().replace(",", "x").split("x")
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            numbers = []
        if len(numbers) not in (3, 4):
            raise ValueError(
                f"Video shape {text!r}: write FRAMESxHEIGHTxWIDTH (e.g. 32x448x448) or FRAMESxHEIGHTxWIDTHxTEMPORAL_PATCH."
            )
        return cls(*numbers)


@dataclass(frozen=True)
class VideoGrid:
    """What the LLM receives from one video: a ``frames x rows x cols`` token grid plus ``extra`` tokens.

    Attributes:
        frames, rows, cols: the merged token grid (``frames`` = temporal patches).
        extra: tokens outside the grid (OneVision's newline feature).
        encoder_sequences: the vision encoder's sequence lengths (one per frame or temporal patch).
        projector_tokens: tokens the projector runs on (before OneVision's pooling).
    """

    frames: int
    rows: int
    cols: int
    extra: int
    encoder_sequences: tuple[int, ...]
    projector_tokens: int

    @property
    def grid(self) -> tuple[int, int, int]:
        """``(frames, rows, cols)`` of merged tokens."""
        return self.frames, self.rows, self.cols

    @property
    def tokens(self) -> int:
        """LLM visual tokens of the video."""
        return self.frames * self.rows * self.cols + self.extra


def _qwen(shape: VideoShape, patch: int = 14, merge: int = 2) -> VideoGrid:
    tp = shape.temporal_patch or 2
    unit = patch * merge
    rows, cols = max(1, round(shape.height / unit)), max(1, round(shape.width / unit))
    frames = math.ceil(shape.frames / tp)
    per_frame = rows * cols * merge * merge
    return VideoGrid(frames, rows, cols, 0, (per_frame,) * frames, frames * rows * cols)


def _onevision(shape: VideoShape, image: int = 384, patch: int = 14, pool: int = 2) -> VideoGrid:
    if shape.temporal_patch not in (None, 1):
        raise ValueError("LLaVA-OneVision encodes every frame on its own: it has no temporal patch (leave it unset or 1).")
    side = image // patch  # the processor resizes every frame to the tower's size
    pooled = math.ceil(side / pool)
    return VideoGrid(shape.frames, pooled, pooled, 1, (side * side,) * shape.frames, shape.frames * side * side)


VIDEO_FAMILIES = {"qwen2-vl": _qwen, "qwen2.5-vl": _qwen, "llava-onevision": _onevision}
"""Preset-name prefixes -> the video layout of that family. (Model knowledge keyed by ``model_type``
belongs to the adapters; moving these layouts there, so a local checkpoint resolves by its config,
is an open item.)"""


def video_grid(model: str, shape: VideoShape) -> VideoGrid:
    """The LLM-side grid of ``shape`` on a model family (a preset name such as ``"qwen2-vl-7b"``).

    Raises:
        ValueError: the family does not take videos (the message lists those that do).
    """
    key = model.lower()
    for prefix, layout in VIDEO_FAMILIES.items():
        if key.startswith(prefix):
            return layout(shape)
    raise ValueError(
        f"{model!r} takes no video in the cost model; video shapes are known for Qwen2-VL / Qwen2.5-VL and "
        "LLaVA-OneVision (presets qwen2-vl-7b, qwen2.5-vl-7b, llava-onevision-7b)."
    )


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
        dims: the model shape (`ModelDims.preset`).
        model: its family's preset name for the video layout (`video_grid`).
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
        "model": model, "video": {"frames": shape.frames, "height": shape.height, "width": shape.width,
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
