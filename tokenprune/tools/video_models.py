"""Random-weight stock video-family models of the 7B shapes, and one video prompt for them.

The video benchmark (`tokenprune.tools.bench_video`) needs a Qwen2-VL, Qwen2.5-VL or LLaVA-OneVision
model of a real shape without a model hub: the LLM and vision tower of the `tokenprune.cost.PRESETS`
entry, widths divided by a scale (heads of about 64 channels, as `tokenprune.tools.bench.BenchShape.scaled`
does for LLaVA), built from config objects, and a prompt holding one video laid out as the family's
processor lays it out (`tokenprune.video_cost.video_grid` gives the token grid).

Models are built per family here, keyed by preset name as `tokenprune.video_cost` keys its layouts
(a benchmark tool constructing stock classes, not the library dispatching on a loaded model).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ..cost import ModelDims
from ..video_cost import VideoShape, video_grid

__all__ = ["VIDEO_SHAPES", "VideoBenchShape", "is_video_shape", "resolve_video_shape", "build_video_model",
           "build_video_inputs"]  # fmt: skip

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
