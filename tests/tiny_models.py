"""Tiny random-initialised stock transformers VLMs and matching inputs, for exactness tests.

Everything is built from config objects (no model hub). The models are the stock HF classes
(`LlavaForConditionalGeneration`, `LlavaNextForConditionalGeneration`,
`LlavaOnevisionForConditionalGeneration`), shrunk so that a forward pass takes milliseconds on CPU,
and initialised with a large std so that attention is peaky: pruning tests need scores that differ
between tokens, which the default std 0.02 does not give.

Inputs are built the way each family's processor would build them: every visual feature has exactly
one placeholder id in `input_ids` (for AnyRes families the unpadded grid plus one `image_newline`
feature per row, all counted as visual placeholders).

API
    make_llava / make_llava_next / make_llava_onevision(attn, dtype, num_layers, seed) -> model
    llava_inputs / llava_next_inputs / llava_onevision_inputs(model, layout, seed) -> dict
    add_labels(inputs, answer_len, seed) -> dict with an answer appended and `labels`
    single_row(inputs, i) -> sample i alone, unpadded, with only its own images
    num_image_tokens(config, multi_image=False), num_video_tokens(config) -> int
    FAMILIES = {name: (factory, input_builder)}; LAYOUTS[name] = layouts that builder accepts
    VISUAL_IDS[name] = ids whose placeholders hold visual features

Qwen2-VL / Qwen2.5-VL / Qwen3-VL / InternVL are in `tiny_models_qwen_internvl.py`, imported at the
end of this module: it registers them into FAMILIES / LAYOUTS / VISUAL_IDS, and the helpers here
(`single_row`, `add_labels`, `num_image_tokens`, `num_video_tokens`) hand its inputs/configs to it.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2Config,
    SiglipVisionConfig,
)
from transformers.image_processing_utils import select_best_resolution

# ----------------------------------------------------------------------------------------------
# Vocabulary: ordinary ids first, special ids right after, all inside the embedding table.
# ----------------------------------------------------------------------------------------------
BOS_ID, EOS_ID = 1, 2
FIRST_TEXT_ID = 3  # random text ids are drawn from [FIRST_TEXT_ID, TEXT_VOCAB): never special
TEXT_VOCAB = 128
PAD_ID, IMAGE_ID, VIDEO_ID = 128, 129, 130
VOCAB_SIZE = 131
SPECIAL_IDS = (BOS_ID, EOS_ID, PAD_ID, IMAGE_ID, VIDEO_ID)

# ----------------------------------------------------------------------------------------------
# Sizes. One 16 px tile with 4 px patches = a 4x4 grid = 16 features per tile.
# ----------------------------------------------------------------------------------------------
HIDDEN, HEADS, KV_HEADS, INTERMEDIATE = 64, 4, 2, 128
VISION_HIDDEN, VISION_HEADS, VISION_INTERMEDIATE, VISION_LAYERS = 32, 2, 64, 2
TILE_PX, PATCH_PX = 16, 4
GRID_PINPOINTS = [[16, 32], [32, 16], [32, 32]]  # AnyRes grids (h, w), i.e. 1x2, 2x1, 2x2 tiles
# Original (h, w) of every AnyRes image: best grid is 1x2 tiles (4x8 features); its aspect ratio
# 3.2 > 2 makes HF unpad two of the four feature rows, so the unpadding path is exercised.
ANYRES_IMAGE_HW = (10, 32)
VIDEO_FRAMES = 2
INIT_STD = 0.2


# ----------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------
def _text_kwargs(num_layers: int) -> dict:
    """Text-stack dims shared by the Llama and Qwen2 configs (GQA: 4 query heads, 2 KV heads)."""
    return dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=num_layers,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=512,
        initializer_range=INIT_STD,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        tie_word_embeddings=False,
    )


def _vision_kwargs() -> dict:
    """Vision-tower dims shared by the CLIP and SigLIP configs."""
    return dict(
        hidden_size=VISION_HIDDEN,
        intermediate_size=VISION_INTERMEDIATE,
        num_hidden_layers=VISION_LAYERS,
        num_attention_heads=VISION_HEADS,
        image_size=TILE_PX,
        patch_size=PATCH_PX,
        initializer_range=INIT_STD,
    )


def llava_config(num_layers: int = 8) -> LlavaConfig:
    """LLaVA-1.5 layout: CLIP tower, CLS dropped ("default"), second-to-last vision layer, Llama."""
    return LlavaConfig(
        vision_config=CLIPVisionConfig(**_vision_kwargs()),
        text_config=LlamaConfig(**_text_kwargs(num_layers)),
        image_token_index=IMAGE_ID,
        image_seq_length=(TILE_PX // PATCH_PX) ** 2,
    )


def llava_next_config(num_layers: int = 8) -> LlavaNextConfig:
    """LLaVA-NeXT layout: as LLaVA plus AnyRes tiling over GRID_PINPOINTS and `image_newline`."""
    return LlavaNextConfig(
        vision_config=CLIPVisionConfig(**_vision_kwargs()),
        text_config=LlamaConfig(**_text_kwargs(num_layers)),
        image_token_index=IMAGE_ID,
        image_grid_pinpoints=GRID_PINPOINTS,
        image_seq_length=(TILE_PX // PATCH_PX) ** 2,
    )


def llava_onevision_config(num_layers: int = 8) -> LlavaOnevisionConfig:
    """LLaVA-OneVision layout: SigLIP tower (no CLS, "full", last layer), AnyRes, Qwen2 text stack."""
    return LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**_vision_kwargs(), vision_use_head=False),
        text_config=Qwen2Config(**_text_kwargs(num_layers)),
        image_token_index=IMAGE_ID,
        video_token_index=VIDEO_ID,
        image_grid_pinpoints=GRID_PINPOINTS,
    )


# ----------------------------------------------------------------------------------------------
# Factories
# ----------------------------------------------------------------------------------------------
def _is_norm(module: nn.Module) -> bool:
    """LayerNorm (vision towers) or any family's *RMSNorm (text stacks), matched by class name."""
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("RMSNorm")


@torch.no_grad()
def _reinit(model: nn.Module, seed: int, std: float = INIT_STD) -> None:
    """Redraw every non-norm parameter (weights, biases, `image_newline`) from N(0, std).

    HF's own init differs per sub-model (CLIP and SigLIP take most std values from fan-in or
    xavier rather than `initializer_range`, and start biases at zero); one explicit rule makes every
    tower equally non-uniform and independent of HF's init code. Norm scales stay 1, shifts 0.
    Values are drawn in float32, so the float32 and float64 builds hold identical weights.
    """
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if _is_norm(module):
            continue
        for param in module.parameters(recurse=False):
            param.copy_(torch.randn(param.shape, generator=gen, dtype=torch.float32) * std)


def _finish(model_cls, config, attn: str, dtype: torch.dtype, seed: int):
    """Build, re-initialise deterministically, cast, switch to eval; shared by all factories."""
    # The setter propagates to the text and vision sub-configs, so every attention module uses it.
    config._attn_implementation = attn
    torch.manual_seed(seed)
    model = model_cls(config)
    _reinit(model, seed)
    model = model.to(dtype).eval()
    gen_cfg = model.generation_config
    gen_cfg.pad_token_id, gen_cfg.bos_token_id, gen_cfg.eos_token_id = PAD_ID, BOS_ID, EOS_ID
    # Greedy decoding never stops early and never emits a special id, so generated sequences can be
    # fed back through forward() (a generated <image> id would break the placeholder count check).
    gen_cfg.suppress_tokens = list(SPECIAL_IDS)
    return model


def make_llava(
    attn: str = "sdpa", dtype: torch.dtype = torch.float64, num_layers: int = 8, seed: int = 0
) -> LlavaForConditionalGeneration:
    """Tiny `LlavaForConditionalGeneration` (Llama text stack); 16 visual tokens per image."""
    return _finish(LlavaForConditionalGeneration, llava_config(num_layers), attn, dtype, seed)


def make_llava_next(
    attn: str = "sdpa", dtype: torch.dtype = torch.float64, num_layers: int = 8, seed: int = 0
) -> LlavaNextForConditionalGeneration:
    """Tiny `LlavaNextForConditionalGeneration` (Llama text stack, AnyRes); 34 visual tokens per image."""
    return _finish(LlavaNextForConditionalGeneration, llava_next_config(num_layers), attn, dtype, seed)


def make_llava_onevision(
    attn: str = "sdpa", dtype: torch.dtype = torch.float64, num_layers: int = 8, seed: int = 0
) -> LlavaOnevisionForConditionalGeneration:
    """Tiny `LlavaOnevisionForConditionalGeneration` (Qwen2 text stack, AnyRes, video support)."""
    config = llava_onevision_config(num_layers)
    return _finish(LlavaOnevisionForConditionalGeneration, config, attn, dtype, seed)


# ----------------------------------------------------------------------------------------------
# Placeholder counts (the processor's arithmetic, restated for the tiny configs)
# ----------------------------------------------------------------------------------------------
def _anyres_token_count(config, image_hw) -> int:
    """Features of one AnyRes image: base tile + unpadded grid + one newline per grid row.

    Mirrors `LlavaNextProcessor._get_number_of_features` / `_get_unpadded_features`.
    """
    tile = config.vision_config.image_size
    side = tile // config.vision_config.patch_size
    best_h, best_w = select_best_resolution(image_hw, config.image_grid_pinpoints)
    rows, cols = side * (best_h // tile), side * (best_w // tile)
    height, width = image_hw
    if width / height > cols / rows:
        new_rows = int(round(height * (cols / width), 7))
        rows -= 2 * ((rows - new_rows) // 2)
    else:
        new_cols = int(round(width * (rows / height), 7))
        cols -= 2 * ((cols - new_cols) // 2)
    max_tiles = int(getattr(config, "vision_aspect_ratio", "anyres_max_9").strip("anyres_max_"))
    if math.sqrt(rows * cols / (max_tiles * side**2)) > 1.1:
        # OneVision would bilinearly shrink such a grid; the tiny grids here never get that large.
        raise NotImplementedError("AnyRes grid larger than vision_aspect_ratio allows")
    return side * side + rows * (cols + 1)


def num_image_tokens(config, multi_image: bool = False) -> int:
    """Placeholders for one image of this module's configs, as `get_image_features` produces them.

    `multi_image` (OneVision only): images of a sample with several images skip AnyRes and give
    one tile plus one newline, as HF does when `batch_num_images[b] != 1`.
    Qwen / InternVL configs: `tiny_models_qwen_internvl.num_image_tokens` (one square image / tile).
    """
    if (count := _more.num_image_tokens(config, multi_image)) is not None:
        return count
    side = config.vision_config.image_size // config.vision_config.patch_size
    cls_token = 1 if isinstance(config.vision_config, CLIPVisionConfig) else 0
    if isinstance(config, LlavaConfig):
        extra = cls_token if config.vision_feature_select_strategy == "full" else 0
        return side * side + extra
    if isinstance(config, LlavaOnevisionConfig) and multi_image:
        return side * side + 1
    return _anyres_token_count(config, ANYRES_IMAGE_HW)


def num_video_tokens(config, frames: int | None = None) -> int:
    """OneVision video placeholders: 2x2-pooled grid per frame (VIDEO_FRAMES frames unless given),
    plus one newline per video. Qwen configs: `tiny_models_qwen_internvl.num_video_tokens`."""
    if (count := _more.num_video_tokens(config, frames)) is not None:
        return count
    frames = VIDEO_FRAMES if frames is None else frames
    side = config.vision_config.image_size // config.vision_config.patch_size
    return frames * math.ceil(side / 2) ** 2 + 1


# ----------------------------------------------------------------------------------------------
# Layouts
# ----------------------------------------------------------------------------------------------
# A row is a list of segments: an int n = n random text tokens, "I" = one image, "V" = one video.
# Images are always separated by text, so `single_row` can find each image as one run of
# placeholders. Every prompt ends with >= 4 text tokens (a last-instruction-token query exists).
_TWO_ROWS = [[3, "I", 5], [7, "I", 9]]
_LAYOUT_SPECS = {
    "single": ("left", [[4, "I", 5]]),
    "left_padded": ("left", _TWO_ROWS),
    "right_padded": ("right", _TWO_ROWS),
    "mixed": ("left", [[3, "I", 5], [2, "I", 3, "I", 6], [9]]),
    # OneVision only: a video row next to an image row (stock class scatters both in one pass).
    "video": ("left", [[3, "V", 5], [4, "I", 6]]),
}
LAYOUTS = {
    "llava": ("single", "left_padded", "right_padded", "mixed"),
    "llava_next": ("single", "left_padded", "right_padded", "mixed"),
    "llava_onevision": ("single", "left_padded", "right_padded", "mixed", "video"),
}


def _random_text(n: int, gen: torch.Generator) -> list[int]:
    return torch.randint(FIRST_TEXT_ID, TEXT_VOCAB, (n,), generator=gen).tolist()


def _row_ids(row, image_len: int, gen: torch.Generator, video_len: int = 0) -> list[int]:
    """Token ids of one row: random text with each image/video expanded to its placeholder run."""
    ids: list[int] = []
    for seg in row:
        if seg == "I":
            ids += [IMAGE_ID] * image_len
        elif seg == "V":
            ids += [VIDEO_ID] * video_len
        else:
            ids += _random_text(seg, gen)
    return ids


def _pad(rows: list[list[int]], side: str) -> dict:
    """Stack ragged rows into `input_ids` / `attention_mask`, padding with PAD_ID on `side`."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        cols = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        input_ids[b, cols] = torch.tensor(row, dtype=torch.long)
        attention_mask[b, cols] = 1
    position_ids = _positions(attention_mask)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids exactly as `generate` derives them from the 2-D mask (0 on padding).

    A bare forward would use `arange(L)` instead, shifting left-padded rows by their pad count.
    RoPE is relative, but HF builds its cos/sin tables in float32, so shifted positions change
    float64 logits by ~1e-6; passing these ids makes forward == generate's prefill and makes a
    padded row match the same sample run alone to ~1e-15.
    """
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)


def _layout(layout: str, family: str):
    if layout not in LAYOUTS[family]:
        raise ValueError(f"layout {layout!r} not available for {family}; choose from {LAYOUTS[family]}")
    return _LAYOUT_SPECS[layout]


def _pixels(shape, dtype, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float32).to(dtype)


def _anyres_pixels(config, n_images: int, dtype, gen) -> dict:
    """NeXT/OneVision processor output: (images, tiles incl. base, C, H, W) and per-image sizes."""
    tile = config.vision_config.image_size
    best_h, best_w = select_best_resolution(ANYRES_IMAGE_HW, config.image_grid_pinpoints)
    tiles = 1 + (best_h // tile) * (best_w // tile)
    return {
        "pixel_values": _pixels((n_images, tiles, 3, tile, tile), dtype, gen),
        "image_sizes": torch.tensor([list(ANYRES_IMAGE_HW)] * n_images, dtype=torch.long),
    }


# ----------------------------------------------------------------------------------------------
# Input builders
# ----------------------------------------------------------------------------------------------
def llava_inputs(model, layout: str = "single", seed: int = 0) -> dict:
    """LLaVA batch; `pixel_values` is (total images in batch order, C, H, W)."""
    side, rows = _layout(layout, "llava")
    gen = torch.Generator().manual_seed(seed)
    n_tok = num_image_tokens(model.config)
    inputs = _pad([_row_ids(r, n_tok, gen) for r in rows], side)
    n_images = sum(r.count("I") for r in rows)
    size = model.config.vision_config.image_size
    inputs["pixel_values"] = _pixels((n_images, 3, size, size), model.dtype, gen)
    return inputs


def llava_next_inputs(model, layout: str = "single", seed: int = 0) -> dict:
    """LLaVA-NeXT batch; `pixel_values` is (total images, tiles, C, H, W) plus `image_sizes`."""
    side, rows = _layout(layout, "llava_next")
    gen = torch.Generator().manual_seed(seed)
    n_tok = num_image_tokens(model.config)
    inputs = _pad([_row_ids(r, n_tok, gen) for r in rows], side)
    inputs.update(_anyres_pixels(model.config, sum(r.count("I") for r in rows), model.dtype, gen))
    return inputs


def llava_onevision_inputs(model, layout: str = "single", seed: int = 0) -> dict:
    """LLaVA-OneVision batch, as its processor builds it.

    `batch_num_images` is always passed (the processor does): a row with several images uses one
    tile per image (17 tokens), a row with one image uses AnyRes. Video rows get
    `pixel_values_videos` (videos, frames, C, H, W) and VIDEO_ID placeholders.
    """
    config = model.config
    side, rows = _layout(layout, "llava_onevision")
    gen = torch.Generator().manual_seed(seed)
    video_len = num_video_tokens(config)
    ids = [_row_ids(r, num_image_tokens(config, r.count("I") > 1), gen, video_len) for r in rows]
    inputs = _pad(ids, side)
    per_row = [r.count("I") for r in rows]
    if sum(per_row):
        inputs.update(_anyres_pixels(config, sum(per_row), model.dtype, gen))
        inputs["batch_num_images"] = torch.tensor(per_row, dtype=torch.long)
    n_videos = sum(r.count("V") for r in rows)
    if n_videos:
        tile = config.vision_config.image_size
        shape = (n_videos, VIDEO_FRAMES, 3, tile, tile)
        inputs["pixel_values_videos"] = _pixels(shape, model.dtype, gen)
    return inputs


# ----------------------------------------------------------------------------------------------
# Batch helpers
# ----------------------------------------------------------------------------------------------
def _padding_side(attention_mask: torch.Tensor) -> str:
    """'right' if some row ends in padding, else 'left' (unpadded batches count as left)."""
    return "right" if bool((attention_mask[:, -1] == 0).any()) else "left"


def _unpadded_rows(inputs: dict) -> list[list[int]]:
    mask = inputs["attention_mask"].bool()
    return [row[m].tolist() for row, m in zip(inputs["input_ids"], mask)]


def add_labels(inputs: dict, answer_len: int = 3, seed: int = 1) -> dict:
    """Append `answer_len` random answer tokens to every row and return HF-style `labels`.

    Labels are unshifted (aligned with `input_ids`, the model shifts them) and -100 everywhere
    except the answer tokens, so padding, prompt text and visual placeholders carry no loss. The
    answer goes right after each row's last real token, i.e. before right padding. The prompt is
    unchanged, so the last instruction token is the token just before the first label != -100.
    Returns a new dict; images are shared with `inputs`. Qwen batches get a matching
    `mm_token_type_ids` and keep letting the model compute its M-RoPE ids (no `position_ids`).
    """
    gen = torch.Generator().manual_seed(seed)
    prompts = _unpadded_rows(inputs)
    answers = [_random_text(answer_len, gen) for _ in prompts]
    side = _padding_side(inputs["attention_mask"])
    out = dict(inputs)
    out.update(_more.fix_rows(_pad([p + a for p, a in zip(prompts, answers)], side), inputs))
    labels = torch.full_like(out["input_ids"], -100)
    for b, (prompt, answer) in enumerate(zip(prompts, answers)):
        start = (out["input_ids"].shape[1] - len(prompt) - answer_len) if side == "left" else 0
        cols = slice(start + len(prompt), start + len(prompt) + answer_len)
        labels[b, cols] = torch.tensor(answer)
    out["labels"] = labels
    return out


def _count_runs(row: torch.Tensor, token_id: int) -> int:
    """Number of maximal runs of `token_id` in a 1-D row (= images, since images never touch)."""
    hit = (row == token_id).long()
    return int((hit[1:] > hit[:-1]).sum() + hit[0])


def _media_per_row(inputs: dict, token_id: int) -> list[int]:
    """Images (or videos) in each row, counted from the placeholder runs of its real tokens."""
    rows = zip(inputs["input_ids"], inputs["attention_mask"].bool())
    return [_count_runs(ids[keep], token_id) for ids, keep in rows]


def single_row(inputs: dict, i: int) -> dict:
    """Sample `i` of a batch as its own unpadded batch of 1, carrying only its own images/videos.

    Images are found as runs of IMAGE_ID in `input_ids` (videos: VIDEO_ID) and mapped to entries
    of `pixel_values` / `image_sizes` / `pixel_values_videos` in batch order, which is how all
    three families lay them out (LLaVA: one 4-D entry per image; NeXT/OneVision: one 5-D entry
    per image). Keys with nothing left for this sample are dropped (a text-only row gets no pixels).
    Qwen / InternVL batches: `tiny_models_qwen_internvl.single_row` (grids, tiles, mm_token_type_ids).
    """
    if _more.owns(inputs):
        return _more.single_row(inputs, i)
    keep = inputs["attention_mask"][i].bool()
    out = _pad([inputs["input_ids"][i][keep].tolist()], "left")
    if "labels" in inputs:
        out["labels"] = inputs["labels"][i][keep][None]
    images, videos = _media_per_row(inputs, IMAGE_ID), _media_per_row(inputs, VIDEO_ID)
    if images[i]:
        first = sum(images[:i])
        for key in ("pixel_values", "image_sizes"):
            if key in inputs:
                out[key] = inputs[key][first : first + images[i]]
        if "batch_num_images" in inputs:
            out["batch_num_images"] = torch.tensor([images[i]], dtype=torch.long)
    if videos[i]:
        first = sum(videos[:i])
        for key in ("pixel_values_videos", "image_sizes_videos"):
            if key in inputs:
                out[key] = inputs[key][first : first + videos[i]]
    return out


FAMILIES = {
    "llava": (make_llava, llava_inputs),
    "llava_next": (make_llava_next, llava_next_inputs),
    "llava_onevision": (make_llava_onevision, llava_onevision_inputs),
}
VISUAL_IDS = {"llava": (IMAGE_ID,), "llava_next": (IMAGE_ID,), "llava_onevision": (IMAGE_ID, VIDEO_ID)}

# Qwen2-VL, Qwen2.5-VL, Qwen3-VL, InternVL (Qwen2 / Llama): that module imports this one, so it is
# imported last; importing it adds its families to FAMILIES / LAYOUTS / VISUAL_IDS (whichever of
# the two modules is imported first).
import tiny_models_qwen_internvl as _more  # noqa: E402
