"""LLaVA family: LLaVA-1.5, LLaVA-NeXT (AnyRes) and LLaVA-OneVision (Qwen2 text stack).

LLaVA-NeXT's ``input_ids`` hold one placeholder per feature, including the ``image_newline``
features, so the whole visual span (base + crops + newlines) is one pool, as in the official
PyramidDrop code. OneVision's video tokens are visual too.
"""

from __future__ import annotations

from torch import nn

from ..errors import UnsupportedFeatureError
from ..hookspecs import RegisterAdapter, hookimpl
from .base import Adapter, VisionTower, pad_token_id
from .hf_decoder import HFDecoderAdapter

__all__ = ["LlavaAdapter"]


class LlavaAdapter(HFDecoderAdapter):
    """`LlavaForConditionalGeneration`, `LlavaNextForConditionalGeneration`, `LlavaOnevisionForConditionalGeneration`."""

    name = "llava"
    model_types = ("llava", "llava_next", "llava_onevision")
    visual_token_attrs = ("image_token_id", "video_token_id")

    def vision_tower(self, model: nn.Module) -> VisionTower:
        """LLaVA-1.5: every image gives ``image_seq_length`` features from one feature layer.

        LLaVA-NeXT and OneVision (AnyRes: the count depends on the image size, plus newline
        features) are not supported for encoder-side reduction yet.
        """
        config = model.config
        if config.model_type != "llava":
            return Adapter.vision_tower(self, model)
        layer = config.vision_feature_layer
        if not isinstance(layer, int):
            raise UnsupportedFeatureError(
                f"vision_feature_layer={layer}: encoder-side reduction needs one feature layer (LLaVA-1.5 uses -2)."
            )
        vlm = model.model if hasattr(model, "lm_head") else model
        tower = vlm.vision_tower
        depth = int(tower.config.num_hidden_layers)
        feature = layer % (depth + 1)
        strip = config.vision_feature_select_strategy == "default"
        return VisionTower(
            tower=tower,
            feature_layer=feature,
            strip_prefix=strip,
            image_token_id=int(config.image_token_id),
            patches_per_image=(int(tower.config.image_size) // int(tower.config.patch_size)) ** 2,
            pad_token_id=pad_token_id(model),
        )


@hookimpl
def tokenprune_register_adapters(register: RegisterAdapter) -> None:
    register(LlavaAdapter())
