"""LLaVA family: LLaVA-1.5, LLaVA-NeXT (AnyRes) and LLaVA-OneVision (Qwen2 text stack).

LLaVA-NeXT's ``input_ids`` hold one placeholder per feature, including the ``image_newline``
features, so the whole visual span (base + crops + newlines) is one pool, as in the official
PyramidDrop code. OneVision's video tokens are visual too.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from torch import nn

from ..errors import UnsupportedFeatureError
from ..hookspecs import RegisterAdapter, hookimpl
from ..video_layout import VideoGrid, VideoShape
from .base import Adapter, VisionTower, pad_token_id
from .hf_decoder import HFDecoderAdapter
from .onevision_video import OnevisionVideos

__all__ = ["LlavaAdapter"]


class LlavaAdapter(HFDecoderAdapter):
    """`LlavaForConditionalGeneration`, `LlavaNextForConditionalGeneration`, `LlavaOnevisionForConditionalGeneration`."""

    name = "llava"
    model_types = ("llava", "llava_next", "llava_onevision")
    preset_types: ClassVar[dict[str, str]] = {"llava-onevision": "llava_onevision"}
    visual_token_attrs = ("image_token_id", "video_token_id")

    def video_grid(self, config: Any, shape: VideoShape) -> VideoGrid | None:
        """LLaVA-OneVision: every frame is resized to the tower's image size and encoded on its own
        (``side x side`` patches, ``side = image_size / patch_size``), projected, then 2x2 bilinear-pooled
        to ``ceil(side / 2)^2`` tokens; one newline feature ends the video. LLaVA-1.5 and -NeXT take no video.

        Raises:
            ValueError: a temporal patch other than 1 (OneVision has none).
        """
        if getattr(config, "video_token_id", None) is None:
            return None
        if shape.temporal_patch not in (None, 1):
            raise ValueError("LLaVA-OneVision encodes every frame on its own: it has no temporal patch (leave it unset or 1).")
        vision = config.vision_config
        side = int(vision.image_size) // int(vision.patch_size)
        pooled = math.ceil(side / 2)  # transformers' get_video_features pools 2x2
        return VideoGrid(shape.frames, pooled, pooled, 1, (side * side,) * shape.frames, shape.frames * side * side)

    def vision_tower(self, model: nn.Module) -> VisionTower:
        """LLaVA-1.5: every image gives ``image_seq_length`` features from one feature layer.

        LLaVA-OneVision: its videos, selected per video on the pooled frame grid
        (`tokenprune.adapters.onevision_video`); its images pass whole. LLaVA-NeXT (AnyRes: the
        count depends on the image size, plus newline features) is not supported yet.
        """
        config = model.config
        vlm = model.model if hasattr(model, "lm_head") else model
        if config.model_type == "llava_onevision":
            return VisionTower(
                tower=vlm.vision_tower, feature_layer=-1, strip_prefix=False, image_token_id=int(config.image_token_id),
                patches_per_image=0, pad_token_id=pad_token_id(model), packed=OnevisionVideos(vlm),
            )  # fmt: skip
        if config.model_type != "llava":
            return Adapter.vision_tower(self, model)
        layer = config.vision_feature_layer
        if not isinstance(layer, int):
            raise UnsupportedFeatureError(
                f"vision_feature_layer={layer}: encoder-side reduction needs one feature layer (LLaVA-1.5 uses -2)."
            )
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
