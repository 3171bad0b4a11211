"""Qwen-VL family: Qwen2-VL, Qwen2.5-VL and Qwen3-VL (stock transformers classes).

* Image and video tokens are visual; ``<|vision_start|>`` / ``<|vision_end|>`` are text.
* 3-D M-RoPE: the rotary module has already folded the (t, h, w) sections into one
  ``(B, L, head_dim)`` table, so slicing it keeps every kept token's original rotation exactly;
  ``rope_deltas`` and decode positions need nothing. Renumbered ("compact") positions are undefined.
* Qwen3-VL adds "deepstack" visual features to the outputs of its first layers with a full-length
  mask, so no reduction may happen before those layers are done.
"""

from __future__ import annotations

from torch import nn

from ..hookspecs import RegisterAdapter, hookimpl
from .hf_decoder import HFDecoderAdapter

__all__ = ["QwenVLAdapter"]


class QwenVLAdapter(HFDecoderAdapter):
    """`Qwen2VLForConditionalGeneration`, `Qwen2_5_VLForConditionalGeneration`, `Qwen3VLForConditionalGeneration`."""

    name = "qwen_vl"
    model_types = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
    visual_token_attrs = ("image_token_id", "video_token_id")
    supports_compact_positions = False

    def min_reduction_layer(self, model: nn.Module) -> tuple[int, str]:
        vision = getattr(model.config, "vision_config", None)
        deepstack = len(getattr(vision, "deepstack_visual_indexes", None) or ())
        if deepstack:
            return deepstack, f"its first {deepstack} layers receive deepstack visual features at full length"
        return super().min_reduction_layer(model)


@hookimpl
def tokenprune_register_adapters(register: RegisterAdapter) -> None:
    register(QwenVLAdapter())
