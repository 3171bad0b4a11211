"""InternVL, HF-native checkpoints (``InternVLForConditionalGeneration``, Qwen2 or Llama text stack).

``<IMG_CONTEXT>`` tokens are visual; ``<img>`` / ``</img>`` are text. All tiles of all images of a
sample form one pool. Remote-code checkpoints (``trust_remote_code``, ``model_type="internvl_chat"``)
have another layout (InternLM2 fused ``wqkv``, RoPE inside attention) and get a clear error.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..cost import VisionDims, tower_vision_dims
from ..errors import UnsupportedModelError
from ..hookspecs import RegisterAdapter, hookimpl
from .base import VisionTower, pad_token_id
from .hf_decoder import HFDecoderAdapter

__all__ = ["InternVLAdapter"]


class InternVLAdapter(HFDecoderAdapter):
    """`InternVLForConditionalGeneration` (the ``-hf`` checkpoints)."""

    name = "internvl"
    model_types = ("internvl",)
    visual_token_attrs = ("image_token_id",)

    def handles_config(self, config: object) -> bool:
        # Also claim remote-code InternVL, so that `check` can point its users to the -hf checkpoint.
        return super().handles_config(config) or getattr(config, "model_type", None) == "internvl_chat"

    def vision_dims(self, config: Any, text_hidden: int) -> VisionDims | None:
        """InternViT tiles; the pixel shuffle merges ``1 / downsample_ratio^2`` patches into one LLM token
        before the projector (LayerNorm-free two-layer MLP on the merged width)."""
        vision = getattr(config, "vision_config", None)
        hidden = getattr(vision, "hidden_size", None)
        if hidden is None:
            return None
        merge = round(1 / float(getattr(config, "downsample_ratio", 0.5)) ** 2)
        projector = ((int(hidden) * merge, text_hidden), (text_hidden, text_hidden))
        return tower_vision_dims(config, text_hidden, patches_per_visual_token=merge, projector=projector)

    def check(self, model: nn.Module) -> None:
        if model.config.model_type == "internvl_chat":
            raise UnsupportedModelError(
                model,
                ["internvl (HF-native)"],
                hint="Remote-code InternVL (trust_remote_code) is not supported: load the HF-native "
                "'-hf' checkpoint of the same model (e.g. OpenGVLab/InternVL3-1B-hf) with "
                "InternVLForConditionalGeneration.",
            )

    def vision_tower(self, model: nn.Module) -> VisionTower:
        """Every tile gives ``image_seq_length`` projected tokens; the pixel shuffle before the
        projector needs the full patch grid, so reduction runs on the projector's output."""
        vlm = model.model if hasattr(model, "lm_head") else model
        config = model.config
        return VisionTower(
            tower=vlm.vision_tower,
            feature_layer=-1,
            strip_prefix=True,
            image_token_id=int(config.image_token_id),
            patches_per_image=int(config.image_seq_length),
            pad_token_id=pad_token_id(model),
            projector=vlm.multi_modal_projector,
        )


@hookimpl
def tokenprune_register_adapters(register: RegisterAdapter) -> None:
    register(InternVLAdapter())
