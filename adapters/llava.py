"""LLaVA family: LLaVA-1.5, LLaVA-NeXT (AnyRes) and LLaVA-OneVision (Qwen2 text stack).

LLaVA-NeXT's ``input_ids`` hold one placeholder per feature, including the ``image_newline``
features, so the whole visual span (base + crops + newlines) is one pool, as in the official
PyramidDrop code. OneVision's video tokens are visual too.
"""

from __future__ import annotations

from ..hookspecs import RegisterAdapter, hookimpl
from .hf_decoder import HFDecoderAdapter

__all__ = ["LlavaAdapter"]


class LlavaAdapter(HFDecoderAdapter):
    """`LlavaForConditionalGeneration`, `LlavaNextForConditionalGeneration`, `LlavaOnevisionForConditionalGeneration`."""

    name = "llava"
    model_types = ("llava", "llava_next", "llava_onevision")
    visual_token_attrs = ("image_token_id", "video_token_id")


@hookimpl
def tokenprune_register_adapters(register: RegisterAdapter) -> None:
    register(LlavaAdapter())
