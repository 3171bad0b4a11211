"""Tiny random vision encoders for the encoder-side tests (built from configs, no downloads).

Each factory returns an `EncoderCase`: the module to wrap, a function that runs the encoder the
way a user would (classifier logits, image embedding, tower output), and a function that returns
the token outputs of the last block (captured with a forward hook), batch first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import open_clip
import timm
import torch
from torch import Tensor, nn
from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

IMAGE = 32
PATCH = 4  # 8x8 = 64 patches
INIT_STD = 0.2  # peaky attention, so that scores differ clearly between tokens


@dataclass
class EncoderCase:
    name: str
    module: nn.Module  # what tokenprune.wrap receives
    run: Callable[[Tensor], Tensor]  # the user's call
    last_block: nn.Module
    num_prefix: int

    def tokens(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """``(run output, last block's token output (B, n, d))``."""
        seen = {}
        handle = self.last_block.register_forward_hook(lambda m, a, out: seen.setdefault("out", out))
        try:
            out = self.run(pixels)
        finally:
            handle.remove()
        tokens = seen["out"]
        return out, tokens


def _reinit(model: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 or "embed" in name or "class" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * INIT_STD)


def _finish(model: nn.Module, dtype: torch.dtype, seed: int) -> nn.Module:
    _reinit(model, seed)
    return model.to(dtype).eval()


def make_timm(dtype: torch.dtype = torch.float64, seed: int = 0, reg_tokens: int = 0) -> EncoderCase:
    torch.manual_seed(seed)  # parameters _reinit leaves alone (biases) start from the same draw too
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=IMAGE, patch_size=PATCH, depth=4, num_heads=3, embed_dim=48,
        num_classes=7, reg_tokens=reg_tokens,
    )
    model = _finish(model, dtype, seed)
    return EncoderCase("timm", model, model, model.blocks[-1], 1 + reg_tokens)


def make_open_clip(dtype: torch.dtype = torch.float64, seed: int = 0) -> EncoderCase:
    torch.manual_seed(seed)
    clip = open_clip.model.CLIP(
        embed_dim=16,
        vision_cfg={"image_size": IMAGE, "patch_size": PATCH, "width": 48, "layers": 4, "head_width": 16},
        text_cfg={"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    )
    clip = _finish(clip, dtype, seed)
    return EncoderCase("open_clip", clip.visual, clip.encode_image, clip.visual.transformer.resblocks[-1], 1)


def _hf_kwargs() -> dict:
    return dict(hidden_size=48, intermediate_size=96, num_hidden_layers=4, num_attention_heads=3, image_size=IMAGE, patch_size=PATCH)


def make_hf_clip(dtype: torch.dtype = torch.float64, seed: int = 0, attn: str = "sdpa") -> EncoderCase:
    torch.manual_seed(seed)
    model = CLIPVisionModel(CLIPVisionConfig(**_hf_kwargs(), attn_implementation=attn))
    model = _finish(model, dtype, seed)
    return EncoderCase("hf_clip", model, lambda x: model(x).pooler_output, getattr(model, "vision_model", model).encoder.layers[-1], 1)


def make_hf_siglip(dtype: torch.dtype = torch.float64, seed: int = 0, attn: str = "sdpa") -> EncoderCase:
    torch.manual_seed(seed)
    model = SiglipVisionModel(SiglipVisionConfig(**_hf_kwargs(), attn_implementation=attn))
    model = _finish(model, dtype, seed)
    return EncoderCase("hf_siglip", model, lambda x: model(x).last_hidden_state, getattr(model, "vision_model", model).encoder.layers[-1], 0)


FACTORIES = {"timm": make_timm, "open_clip": make_open_clip, "hf_clip": make_hf_clip, "hf_siglip": make_hf_siglip}


def pixels(batch: int = 3, dtype: torch.dtype = torch.float64, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, IMAGE, IMAGE, generator=gen).to(dtype)
