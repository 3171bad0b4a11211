"""Tiny random-initialised Qwen2-VL / Qwen2.5-VL / Qwen3-VL / InternVL models and matching inputs.

Companion of `tiny_models.py`, with the same conventions: stock HF classes built from config
objects (no model hub), text stack hidden 64 / 4 heads / 2 KV heads / intermediate 128 / 8 layers,
tiny vision towers, every non-norm parameter redrawn from N(0, 0.2) (`tiny_models._reinit`) so that
attention is peaky, deterministic by seed, `attn` applied to every sub-model, float64 by default.
Importing this module (which `tiny_models` does at its end) registers the families below into
`tiny_models.FAMILIES` / `LAYOUTS` / `VISUAL_IDS`, and `tiny_models.single_row`, `add_labels`,
`num_image_tokens` and `num_video_tokens` dispatch here for these families' configs and inputs.

Vocabulary: the one of `tiny_models` (VOCAB_SIZE 131; random text ids in [3, 128); PAD 128;
IMAGE_ID 129 = `<|image_pad|>` / `<IMG_CONTEXT>`; VIDEO_ID 130 = `<|video_pad|>`), so generic tests
(`tm.VOCAB_SIZE`, `tm.IMAGE_ID`, `tm.SPECIAL_IDS`) hold for every family. The span delimiters
(`<|vision_start|>`/`<|vision_end|>` for Qwen, `<img>`/`</img>` for InternVL) take the only two ids
that no builder ever emits as text: 0 (unused) and 1 (`tm.BOS_ID`; Qwen and InternVL-HF prompts
carry no BOS, so these models get `bos_token_id=None`). The delimiters are text tokens for the
model (no 5.23 modeling code reads them) and are never visual.

Visual tokens per image / video (placeholders = features, checked against the vision path):
    qwen2_vl, qwen2_5_vl, qwen3_vl: patch 4 px, temporal patch 2, 2x2 merge.
        square image 32x32 px -> grid (1, 8, 8) -> 4x4 = 16 tokens;
        wide image 32x48 px   -> grid (1, 8, 12) -> 4x6 = 24 tokens (exercises h != w in M-RoPE);
        video 4 frames 32x32  -> grid (2, 8, 8) -> 2 x 16 = 32 tokens (Qwen3-VL: two 16-token
        frame spans, each preceded by a 2-token timestamp, as its processor writes them).
        Qwen3-VL: DeepStack on decoder layers 0 and 1 by default (QWEN3_DEEPSTACK).
    internvl_qwen2, internvl_llama: 32 px tiles, patch 4 (8x8 patches, CLS dropped), pixel
        shuffle 0.5 -> 16 tokens per tile; a single-tile image = 16, the multi-tile image of the
        "multi_tile" layout = 3 tiles (2 crops + thumbnail) = 48 tokens in one `<img>` span.

API (as in tiny_models)
    make_qwen2_vl / make_qwen2_5_vl / make_qwen3_vl / make_internvl_qwen2 / make_internvl_llama
        (attn, dtype, num_layers, seed) -> model        (make_qwen3_vl also takes `deepstack`)
    qwen2_vl_inputs / qwen2_5_vl_inputs / qwen3_vl_inputs / internvl_inputs (model, layout, seed)
    num_image_tokens(config, multi_image=False, kind="I") / num_video_tokens(config)
    generate_position_ids(model, inputs) -> the (4, B, L) ids `generate` computes for Qwen prefill
    FAMILIES, LAYOUTS, VISUAL_IDS (also merged into tiny_models' dicts)
"""

from __future__ import annotations

import torch
from transformers import (
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLVisionConfig,
    LlamaConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLTextConfig,
    Qwen2_5_VLVisionConfig,
    Qwen2Config,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLTextConfig,
    Qwen2VLVisionConfig,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLTextConfig,
    Qwen3VLVisionConfig,
)

# `tiny_models` imports this module at its very end, when everything used here is defined; if this
# module is imported first, `import tiny_models` runs that module completely before going on.
import tiny_models as tm
from tiny_models import IMAGE_ID, VIDEO_ID

# ----------------------------------------------------------------------------------------------
# Ids
# ----------------------------------------------------------------------------------------------
VISION_START_ID, VISION_END_ID = 0, tm.BOS_ID  # Qwen <|vision_start|>, <|vision_end|>
IMG_START_ID, IMG_END_ID = 0, tm.BOS_ID  # InternVL <img>, </img>
# Suppressed in generate (tm.SPECIAL_IDS plus id 0), so generated text can be fed back to forward().
SPECIAL_IDS = tuple(sorted(set(tm.SPECIAL_IDS) | {VISION_START_ID, VISION_END_ID}))

QWEN_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
INTERNVL_FAMILIES = ("internvl_qwen2", "internvl_llama")
VISUAL_IDS = {
    **{name: (IMAGE_ID, VIDEO_ID) for name in QWEN_FAMILIES},
    **{name: (IMAGE_ID,) for name in INTERNVL_FAMILIES},
}
"""family -> ids whose positions hold visual features (the delimiters are text, not listed)."""

# ----------------------------------------------------------------------------------------------
# Sizes
# ----------------------------------------------------------------------------------------------
VISION_HIDDEN, VISION_HEADS, VISION_INTERMEDIATE, VISION_LAYERS = 32, 2, 64, 2
QWEN_PATCH, QWEN_TEMPORAL_PATCH, QWEN_MERGE = 4, 2, 2
# (t, h, w) in patches, as the Qwen image processor reports them in image_grid_thw/video_grid_thw.
QWEN_GRIDS = {"I": (1, 8, 8), "W": (1, 8, 12), "V": (2, 8, 8)}
QWEN_VIDEO_FRAMES = QWEN_GRIDS["V"][0] * QWEN_TEMPORAL_PATCH  # 4 raw frames
QWEN3_TIMESTAMP_LEN = 2  # text tokens of "<0.5 seconds>" before each Qwen3-VL video frame
# DeepStack levels: the merged features of vision blocks 0..k-1 are added to the visual positions'
# hidden states after decoder layers 0..k-1. Real checkpoints have k = 3 in 28-36 decoder layers,
# i.e. all before the first PDrop boundary (25 % of depth); k = 2 keeps that true for the 8-layer
# tiny model and its default boundaries (2, 4, 6). `make_qwen3_vl(deepstack=3)` gives the real count.
QWEN3_DEEPSTACK = 2
# Qwen3-VL RMS-normalises q and k per head (`q_norm`/`k_norm`), so with unit norm scales the
# attention logits have std ~1 whatever the init std, and attention is near-uniform. Scale 2 makes
# it as peaky as the other families' (max attention of the last token ~4-15x uniform).
QWEN3_QK_NORM_SCALE = 2.0
# M-RoPE sections over head_dim/2 = 8 frequencies. Qwen2/2.5-VL split them in blocks (t, h, w);
# Qwen3-VL interleaves them (t h w t h w ...) and only needs 3*max(h, w) <= 8, like its [24, 20, 20]
# for 64 frequencies.
MROPE_SECTION = [2, 3, 3]
QWEN3_MROPE_SECTION = [4, 2, 2]
QWEN2_5_TOKENS_PER_SECOND, QWEN2_5_SECONDS_PER_GRID = 2, 1.0
INTERNVL_TILE_PX, INTERNVL_PATCH_PX, INTERNVL_MULTI_TILES = 32, 4, 3
INTERNVL_TILE_TOKENS = ((INTERNVL_TILE_PX // INTERNVL_PATCH_PX) // 2) ** 2  # pixel shuffle 0.5: 16


# ----------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------
def _text_kwargs(num_layers: int) -> dict:
    kwargs = tm._text_kwargs(num_layers)
    kwargs["bos_token_id"] = None  # id 1 is <|vision_end|> / </img> here
    return kwargs


def _qwen_rope(section) -> dict:
    return {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": list(section)}


def _qwen_ids() -> dict:
    return dict(
        image_token_id=IMAGE_ID,
        video_token_id=VIDEO_ID,
        vision_start_token_id=VISION_START_ID,
        vision_end_token_id=VISION_END_ID,
        tie_word_embeddings=False,
    )


def _qwen_vision_common() -> dict:
    return dict(
        depth=VISION_LAYERS,
        num_heads=VISION_HEADS,
        patch_size=QWEN_PATCH,
        temporal_patch_size=QWEN_TEMPORAL_PATCH,
        spatial_merge_size=QWEN_MERGE,
        initializer_range=tm.INIT_STD,
    )


def qwen2_vl_config(num_layers: int = 8) -> Qwen2VLConfig:
    """Qwen2-VL: full-attention ViT with 2D RoPE and a 2x2 patch merger; block M-RoPE text stack."""
    vision = Qwen2VLVisionConfig(
        **_qwen_vision_common(),
        embed_dim=VISION_HIDDEN,
        mlp_ratio=VISION_INTERMEDIATE // VISION_HIDDEN,
        hidden_size=tm.HIDDEN,  # merger output = text hidden size
    )
    text = Qwen2VLTextConfig(**_text_kwargs(num_layers), rope_parameters=_qwen_rope(MROPE_SECTION))
    return Qwen2VLConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), **_qwen_ids())


def qwen2_5_vl_config(num_layers: int = 8) -> Qwen2_5_VLConfig:
    """Qwen2.5-VL: window-attention ViT (2x2 merged windows of 16 px, last block full), RMSNorm."""
    vision = Qwen2_5_VLVisionConfig(
        **_qwen_vision_common(),
        hidden_size=VISION_HIDDEN,
        intermediate_size=VISION_INTERMEDIATE,
        out_hidden_size=tm.HIDDEN,
        window_size=2 * QWEN_MERGE * QWEN_PATCH,  # 2x2 merged tokens per window
        fullatt_block_indexes=[VISION_LAYERS - 1],
        tokens_per_second=QWEN2_5_TOKENS_PER_SECOND,
    )
    text = Qwen2_5_VLTextConfig(**_text_kwargs(num_layers), rope_parameters=_qwen_rope(MROPE_SECTION))
    return Qwen2_5_VLConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), **_qwen_ids())


def qwen3_vl_config(num_layers: int = 8, deepstack: int = QWEN3_DEEPSTACK) -> Qwen3VLConfig:
    """Qwen3-VL: ViT with a learned (interpolated) position grid, interleaved M-RoPE, q/k norms, and
    DeepStack: the merged features of vision blocks `0..deepstack-1` are added to the hidden states of
    the visual positions after decoder layers `0..deepstack-1`."""
    vision = Qwen3VLVisionConfig(
        **{**_qwen_vision_common(), "depth": max(VISION_LAYERS, deepstack)},
        hidden_size=VISION_HIDDEN,
        intermediate_size=VISION_INTERMEDIATE,
        out_hidden_size=tm.HIDDEN,
        num_position_embeddings=QWEN_GRIDS["I"][1] * QWEN_GRIDS["I"][2],  # 8x8 learned grid
        deepstack_visual_indexes=list(range(deepstack)),
    )
    text = Qwen3VLTextConfig(
        **_text_kwargs(num_layers),
        head_dim=tm.HIDDEN // tm.HEADS,  # the config's default is 128, not hidden / heads
        rope_parameters=_qwen_rope(QWEN3_MROPE_SECTION),
    )
    return Qwen3VLConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), **_qwen_ids())


def internvl_config(num_layers: int = 8, text: str = "qwen2") -> InternVLConfig:
    """InternVL (HF-native): InternViT, CLS dropped, pixel shuffle 0.5, MLP projector; Qwen2 or Llama."""
    vision = InternVLVisionConfig(
        hidden_size=VISION_HIDDEN,
        intermediate_size=VISION_INTERMEDIATE,
        num_hidden_layers=VISION_LAYERS,
        num_attention_heads=VISION_HEADS,
        image_size=[INTERNVL_TILE_PX, INTERNVL_TILE_PX],
        patch_size=[INTERNVL_PATCH_PX, INTERNVL_PATCH_PX],
        initializer_range=tm.INIT_STD,
    )
    text_cls = {"qwen2": Qwen2Config, "llama": LlamaConfig}[text]
    return InternVLConfig(
        vision_config=vision.to_dict(),
        text_config=text_cls(**_text_kwargs(num_layers)).to_dict(),
        image_token_id=IMAGE_ID,
        image_seq_length=INTERNVL_TILE_TOKENS,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )


# ----------------------------------------------------------------------------------------------
# Factories
# ----------------------------------------------------------------------------------------------
def _finish(model_cls, config, attn: str, dtype: torch.dtype, seed: int):
    model = tm._finish(model_cls, config, attn, dtype, seed)
    gen_cfg = model.generation_config
    gen_cfg.bos_token_id = None
    gen_cfg.suppress_tokens = list(SPECIAL_IDS)
    return model


def make_qwen2_vl(
    attn: str = "sdpa", dtype: torch.dtype = torch.float64, num_layers: int = 8, seed: int = 0
) -> Qwen2VLForConditionalGeneration:
    """Tiny `Qwen2VLForConditionalGeneration`; 16 tokens per 32x32 image, 32 per 4-frame video."""
    return _finish(Qwen2VLForConditionalGeneration, qwen2_vl_config(num_layers), attn, dtype, seed)


def make_qwen2_5_vl(
    attn: str = "sdpa", dtype: torch.dtype = torch.float64, num_layers: int = 8, seed: int = 0
) -> Qwen2_5_VLForConditionalGeneration:
    """Tiny `Qwen2_5_VLForConditionalGeneration` (window-attention ViT); token counts as Qwen2-VL."""
    return _finish(Qwen2_5_VLForConditionalGeneration, qwen2_5_vl_config(num_layers), attn, dtype, seed)


def make_qwen3_vl(
    attn: str = "sdpa",
    dtype: torch.dtype = torch.float64,
    num_layers: int = 8,
    seed: int = 0,
    deepstack: int = QWEN3_DEEPSTACK,
) -> Qwen3VLForConditionalGeneration:
    """Tiny `Qwen3VLForConditionalGeneration`; token counts as Qwen2-VL.

    `deepstack` = number of DeepStack levels (decoder layers 0..deepstack-1 get visual features
    added to their output); default 2 (see QWEN3_DEEPSTACK), 3 like the real checkpoints, 0 = off.
    The text stack's q/k norm scales are QWEN3_QK_NORM_SCALE (peaky attention despite qk-norm).
    """
    config = qwen3_vl_config(num_layers, deepstack)
    model = _finish(Qwen3VLForConditionalGeneration, config, attn, dtype, seed)
    with torch.no_grad():  # the one exception to "norm scales stay 1" (see QWEN3_QK_NORM_SCALE)
        for layer in model.model.language_model.layers:
            layer.self_attn.q_norm.weight.fill_(QWEN3_QK_NORM_SCALE)
            layer.self_attn.k_norm.weight.fill_(QWEN3_QK_NORM_SCALE)
    return model


def make_internvl_qwen2(
    attn: str = "sdpa", dtype: torch.dtype = torch.float64, num_layers: int = 8, seed: int = 0
) -> InternVLForConditionalGeneration:
    """Tiny `InternVLForConditionalGeneration` with a Qwen2 text stack; 16 tokens per tile."""
    config = internvl_config(num_layers, "qwen2")
    return _finish(InternVLForConditionalGeneration, config, attn, dtype, seed)


def make_internvl_llama(
    attn: str = "sdpa", dtype: torch.dtype = torch.float64, num_layers: int = 8, seed: int = 0
) -> InternVLForConditionalGeneration:
    """Tiny `InternVLForConditionalGeneration` with a Llama text stack; 16 tokens per tile."""
    config = internvl_config(num_layers, "llama")
    return _finish(InternVLForConditionalGeneration, config, attn, dtype, seed)


# ----------------------------------------------------------------------------------------------
# Placeholder counts
# ----------------------------------------------------------------------------------------------
def _is_qwen(config) -> bool:
    return isinstance(config, (Qwen2VLConfig, Qwen2_5_VLConfig, Qwen3VLConfig))


def qwen_tokens(grid_thw, merge: int = QWEN_MERGE) -> int:
    """Features of one image/video with this (t, h, w) patch grid: t * h * w / merge^2."""
    t, h, w = (int(x) for x in grid_thw)
    return t * h * w // merge**2


def num_image_tokens(config, multi_image: bool = False, kind: str = "I", tiles: int = 1) -> int | None:
    """Placeholders of one image for these families' configs (None for any other config).

    Qwen: `kind` "I" (square, 16) or "W" (wide, 24); InternVL: `tiles` tiles of 16 each.
    `multi_image` changes nothing here (accepted for tiny_models' signature).
    """
    if _is_qwen(config):
        return qwen_tokens(QWEN_GRIDS[kind], config.vision_config.spatial_merge_size)
    if isinstance(config, InternVLConfig):
        side = config.vision_config.image_size[0] // config.vision_config.patch_size[0]
        return tiles * int(side * config.downsample_ratio) ** 2
    return None


def num_video_tokens(config, frames: int | None = None) -> int | None:
    """Placeholders of one Qwen video of `frames` raw frames (default 4; None for other configs)."""
    if not _is_qwen(config):
        return None
    vision = config.vision_config
    frames = QWEN_VIDEO_FRAMES if frames is None else frames
    _, h, w = QWEN_GRIDS["V"]
    return qwen_tokens((frames // vision.temporal_patch_size, h, w), vision.spatial_merge_size)


# ----------------------------------------------------------------------------------------------
# Layouts
# ----------------------------------------------------------------------------------------------
# Segments as in tiny_models: int = random text, "I" = image, "V" = video; plus "W" = wide image
# (Qwen) and "M" = multi-tile image (InternVL). Every prompt ends with >= 4 text tokens.
_TWO_ROWS = [[3, "I", 5], [7, "I", 9]]
_QWEN_SPECS = {
    "single": ("left", [[4, "I", 5]]),
    "left_padded": ("left", _TWO_ROWS),
    "right_padded": ("right", _TWO_ROWS),
    "mixed": ("left", [[3, "I", 5], [2, "I", 3, "W", 6], [9]]),  # 1 / 2 (square + wide) / 0 images
    "video": ("left", [[3, "V", 5], [4, "I", 6]]),  # a video row next to an image row
}
_INTERNVL_SPECS = {
    "single": ("left", [[4, "I", 5]]),
    "left_padded": ("left", _TWO_ROWS),
    "right_padded": ("right", _TWO_ROWS),
    "mixed": ("left", [[3, "I", 5], [2, "I", 3, "I", 6], [9]]),
    "multi_tile": ("left", [[3, "M", 5], [4, "I", 6]]),  # 3-tile image next to a 1-tile image
}
LAYOUTS = {
    **{name: tuple(_QWEN_SPECS) for name in QWEN_FAMILIES},
    **{name: tuple(_INTERNVL_SPECS) for name in INTERNVL_FAMILIES},
}


def _layout(layout: str, family: str, specs: dict):
    if layout not in LAYOUTS[family]:
        raise ValueError(f"layout {layout!r} not available for {family}; choose from {LAYOUTS[family]}")
    return specs[layout]


def mm_token_type_ids(input_ids: torch.Tensor) -> torch.Tensor:
    """What the Qwen processors return next to `input_ids`: 1 at image, 2 at video placeholders."""
    return (input_ids == IMAGE_ID).long() + 2 * (input_ids == VIDEO_ID).long()


# ----------------------------------------------------------------------------------------------
# Input builders
# ----------------------------------------------------------------------------------------------
def _span(token_id: int, n: int, start: int = VISION_START_ID, end: int = VISION_END_ID) -> list[int]:
    """One visual span: `start`, n placeholders, `end`."""
    return [start] + [token_id] * n + [end]


def _qwen_inputs(model, layout: str, seed: int, family: str) -> dict:
    """Qwen batch as its processor builds it.

    `pixel_values` is (patches of all images in batch order, C * temporal_patch * patch^2) with
    `image_grid_thw` (images, 3); videos likewise in `pixel_values_videos` / `video_grid_thw`
    (Qwen2.5-VL adds `second_per_grid_ts`). Each image/video span is wrapped in
    <|vision_start|> ... <|vision_end|>; Qwen3-VL writes a video as one such span per temporal
    patch, each preceded by timestamp text. `mm_token_type_ids` (required in transformers 5.x
    whenever grids are passed) marks image (1) and video (2) placeholders.

    No `position_ids` (unlike the LLaVA builders): without them the model computes the 3-D M-RoPE
    ids itself (`get_rope_index` over the real tokens of each row, from `mm_token_type_ids`, the
    grids and the 2-D mask), which are padding-aware, equal rows 1-3 of the (4, B, L) ids that
    `generate` builds for prefill (row 0 there = 1-D text positions, used only for mask creation /
    FA2 packing), and give the same logits bit for bit (tests check both). So a padded row already
    equals the same row alone; 2-D ids (as `_pad` makes) would even be wrong here, since the model
    would broadcast them to t = h = w. `generate_position_ids` gives generate's ids when wanted.
    """
    config = model.config
    side, rows = _layout(layout, family, _QWEN_SPECS)
    gen = torch.Generator().manual_seed(seed)
    merge = config.vision_config.spatial_merge_size
    ids, images, videos = [], [], []
    for row in rows:
        out: list[int] = []
        for seg in row:
            if isinstance(seg, int):
                out += tm._random_text(seg, gen)
            elif seg == "V":
                videos.append(QWEN_GRIDS["V"])
                t, h, w = QWEN_GRIDS["V"]
                if family == "qwen3_vl":  # one span per temporal patch, after its timestamp
                    for _ in range(t):
                        out += tm._random_text(QWEN3_TIMESTAMP_LEN, gen)
                        out += _span(VIDEO_ID, qwen_tokens((1, h, w), merge))
                else:
                    out += _span(VIDEO_ID, qwen_tokens((t, h, w), merge))
            else:
                images.append(QWEN_GRIDS[seg])
                out += _span(IMAGE_ID, qwen_tokens(QWEN_GRIDS[seg], merge))
        ids.append(out)
    inputs = tm._pad(ids, side)
    del inputs["position_ids"]
    inputs["mm_token_type_ids"] = mm_token_type_ids(inputs["input_ids"])
    vision = config.vision_config
    width = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    for grids, pixels, grid_key in (
        (images, "pixel_values", "image_grid_thw"),
        (videos, "pixel_values_videos", "video_grid_thw"),
    ):
        if grids:
            grid = torch.tensor(grids, dtype=torch.long)
            inputs[pixels] = tm._pixels((int(grid.prod(-1).sum()), width), model.dtype, gen)
            inputs[grid_key] = grid
    if videos and family == "qwen2_5_vl":
        inputs["second_per_grid_ts"] = torch.tensor([QWEN2_5_SECONDS_PER_GRID] * len(videos))
    return inputs


def qwen2_vl_inputs(model, layout: str = "single", seed: int = 0) -> dict:
    """Qwen2-VL batch (see `_qwen_inputs`)."""
    return _qwen_inputs(model, layout, seed, "qwen2_vl")


def qwen2_5_vl_inputs(model, layout: str = "single", seed: int = 0) -> dict:
    """Qwen2.5-VL batch (see `_qwen_inputs`); video rows also get `second_per_grid_ts`."""
    return _qwen_inputs(model, layout, seed, "qwen2_5_vl")


def qwen3_vl_inputs(model, layout: str = "single", seed: int = 0) -> dict:
    """Qwen3-VL batch (see `_qwen_inputs`); a video is written frame by frame with timestamps."""
    return _qwen_inputs(model, layout, seed, "qwen3_vl")


def internvl_inputs(model, layout: str = "single", seed: int = 0) -> dict:
    """InternVL batch as its processor builds it: `<img>` + `<IMG_CONTEXT>` x 16 x tiles + `</img>`
    per image; `pixel_values` is (all tiles of all images in batch order, C, H, W), a multi-tile
    image being consecutive entries. 2-D `position_ids` as generate derives them (the text stack
    uses 1-D RoPE, so this is the LLaVA situation; see `tiny_models._positions`)."""
    family = "internvl_llama" if model.config.text_config.model_type == "llama" else "internvl_qwen2"
    side, rows = _layout(layout, family, _INTERNVL_SPECS)
    gen = torch.Generator().manual_seed(seed)
    ids, tiles = [], 0
    for row in rows:
        out: list[int] = []
        for seg in row:
            if isinstance(seg, int):
                out += tm._random_text(seg, gen)
            else:
                n = INTERNVL_MULTI_TILES if seg == "M" else 1
                tiles += n
                n_tok = num_image_tokens(model.config, tiles=n)
                out += _span(IMAGE_ID, n_tok, IMG_START_ID, IMG_END_ID)
        ids.append(out)
    inputs = tm._pad(ids, side)
    size = model.config.vision_config.image_size
    inputs["pixel_values"] = tm._pixels((tiles, 3, size[0], size[1]), model.dtype, gen)
    return inputs


def generate_position_ids(model, inputs: dict) -> torch.Tensor:
    """The (4, B, L) ids Qwen's `generate` passes at prefill (row 0: 1-D text positions from the 2-D
    mask; rows 1-3: M-RoPE t/h/w), from the model's own (private, 5.23)
    `_prepare_position_ids_for_generation`. Sets `model.model.rope_deltas`, as generate does."""
    kwargs = {k: v for k, v in inputs.items() if k != "position_ids"}
    return model._prepare_position_ids_for_generation(inputs["input_ids"], kwargs)


# ----------------------------------------------------------------------------------------------
# Batch helpers used by tiny_models.single_row / add_labels
# ----------------------------------------------------------------------------------------------
def owns(inputs: dict) -> bool:
    """True for batches built here: Qwen (has `mm_token_type_ids`) or InternVL (has `<img>` ids;
    LLaVA batches never contain id 0)."""
    return "mm_token_type_ids" in inputs or bool((inputs["input_ids"] == IMG_START_ID).any())


def fix_rows(out: dict, like: dict) -> dict:
    """Family-specific per-token keys after `tiny_models._pad` rebuilt `input_ids`/`attention_mask`
    from rows of batch `like`: Qwen gets `mm_token_type_ids` and no 2-D `position_ids` (see
    `_qwen_inputs`); InternVL keeps the 2-D ids, as LLaVA."""
    if "mm_token_type_ids" in like:
        out.pop("position_ids", None)
        out["mm_token_type_ids"] = mm_token_type_ids(out["input_ids"])
    return out


def _tokens_per_row(inputs: dict, token_id: int) -> list[int]:
    mask = inputs["attention_mask"].bool()
    return [int((ids[m] == token_id).sum()) for ids, m in zip(inputs["input_ids"], mask)]


def _take_qwen_media(inputs, out, i, token_id, pixels, grid_key, extra=()):
    """Give row `i` its own grids/pixel rows: media are consumed in batch order, each accounting
    for prod(grid) / merge^2 placeholders of its row (merge inferred from the batch)."""
    if grid_key not in inputs:
        return
    grid = inputs[grid_key]
    per_row = _tokens_per_row(inputs, token_id)
    merge_sq = int(grid.prod(-1).sum()) // sum(per_row)
    tokens = (grid.prod(-1) // merge_sq).tolist()
    first, before = 0, sum(per_row[:i])
    while before > 0:
        before -= tokens[first]
        first += 1
    last, mine = first, per_row[i]
    while mine > 0:
        mine -= tokens[last]
        last += 1
    if last == first:
        return
    starts = [0] + grid.prod(-1).cumsum(0).tolist()
    out[pixels] = inputs[pixels][starts[first] : starts[last]]
    out[grid_key] = grid[first:last]
    for key in extra:
        if key in inputs:
            out[key] = inputs[key][first:last]


def single_row(inputs: dict, i: int) -> dict:
    """Sample `i` alone, unpadded, with only its own images/videos/tiles (see tiny_models.single_row)."""
    keep = inputs["attention_mask"][i].bool()
    out = fix_rows(tm._pad([inputs["input_ids"][i][keep].tolist()], "left"), inputs)
    if "labels" in inputs:
        out["labels"] = inputs["labels"][i][keep][None]
    if "mm_token_type_ids" in inputs:
        _take_qwen_media(inputs, out, i, IMAGE_ID, "pixel_values", "image_grid_thw")
        video_keys = ("pixel_values_videos", "video_grid_thw")
        _take_qwen_media(inputs, out, i, VIDEO_ID, *video_keys, extra=("second_per_grid_ts",))
    elif "pixel_values" in inputs:  # InternVL: tiles in batch order, a constant number of tokens each
        per_row = _tokens_per_row(inputs, IMAGE_ID)
        per_tile = sum(per_row) // inputs["pixel_values"].shape[0]
        first, count = sum(per_row[:i]) // per_tile, per_row[i] // per_tile
        if count:
            out["pixel_values"] = inputs["pixel_values"][first : first + count]
    return out


FAMILIES = {
    "qwen2_vl": (make_qwen2_vl, qwen2_vl_inputs),
    "qwen2_5_vl": (make_qwen2_5_vl, qwen2_5_vl_inputs),
    "qwen3_vl": (make_qwen3_vl, qwen3_vl_inputs),
    "internvl_qwen2": (make_internvl_qwen2, internvl_inputs),
    "internvl_llama": (make_internvl_llama, internvl_inputs),
}

# Register into tiny_models (whichever of the two modules was imported first).
tm.FAMILIES.update(FAMILIES)
tm.LAYOUTS.update(LAYOUTS)
tm.VISUAL_IDS.update(VISUAL_IDS)
