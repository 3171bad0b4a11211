"""LLaVA-OneVision's videos as a packed vision side: projector-side selection per video.

`get_video_features` encodes every frame as its own image (SigLIP), projects it, pools it 2x2
(bilinear) to a ``p x p`` grid, concatenates the frames and appends one ``image_newline`` feature:
``(videos, frames * p * p + 1, d)``, scattered into the ``<video>`` placeholders in that order. No
tower call sees a whole video, so the layout of each video is read from that output's shape
(`OnevisionVideos.describe`): a ``(frames, p, p)`` grid and one extra token, the newline, which
always stays. The selection (`tokenprune.encoder.packed`) then runs on the pooled grid, the prompt's
``<video>`` run shrinks to the kept count, and every kept token keeps its original 1-D position
(the full prompt's ``position_ids`` taken at the kept columns), as on Qwen2-VL: the pruned model equals
the full-length model with the dropped video tokens masked out as keys.

Only videos are reduced: OneVision's images (AnyRes crops, unpadded, with a newline per row) pass
whole, and a selection that would reduce a still image is refused at wrap time. No tower attention
belongs to a pooled token, so selections must rank without it (the temporal reducers compare
frames' features).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..encoder.packed import PackedRecord
from ..errors import UnsupportedFeatureError
from .base import PackedVision

__all__ = ["OnevisionVideos"]


class OnevisionVideos(PackedVision):
    """Where LLaVA-OneVision keeps its video tokens (see the module docstring).

    Args:
        vlm: the ``LlavaOnevisionModel`` (the module holding ``vision_tower`` and ``get_video_features``).
    """

    def __init__(self, vlm: nn.Module):
        self.vlm = vlm
        self.tower = vlm.vision_tower
        self.score_block = None  # frames are encoded as separate images: no tower call describes a video
        config = vlm.config
        self.modalities = {"video": int(config.video_token_id)}
        vision = config.vision_config
        self.pooled = math.ceil(int(vision.image_size) // int(vision.patch_size) / 2)  # get_video_features pools 2x2

    def describe(self, output: Any) -> PackedRecord | None:
        """Each video's ``(frames, p, p)`` grid and its newline, from the ``(videos, frames*p*p + 1, d)`` features."""
        features = getattr(output, "pooler_output", None)
        if not isinstance(features, Tensor) or features.dim() != 3:
            return None
        frames, rest = divmod(features.shape[1] - 1, self.pooled**2)
        if rest or frames < 1:
            raise RuntimeError(
                f"LLaVA-OneVision video features hold {features.shape[1]} tokens per video, not frames x "
                f"{self.pooled}x{self.pooled} pooled tokens plus one newline."
            )
        grids = torch.tensor([[frames, self.pooled, self.pooled]] * features.shape[0], dtype=torch.long)
        return PackedRecord(grids, self._no_attention, extra=1)

    @staticmethod
    def _no_attention() -> Tensor:
        raise UnsupportedFeatureError(
            "LLaVA-OneVision pools each frame's projected features 2x2 after the vision tower, so no tower attention "
            "belongs to a video token. Rank video tokens by their features (NullScorer with a temporal reducer, as "
            "evs, dycoke and vidcom2 do), or use an LLM-side strategy (pyramiddrop)."
        )

    def pack(self, features: list[Tensor]) -> Tensor:
        """``(1, kept tokens of every video, d)``: the VLM flattens the first two dimensions."""
        return torch.cat(features, dim=0).unsqueeze(0)

    def check_selection(self, selection: Any) -> None:
        """Refuse a selection that would reduce still images (OneVision's images cannot be reduced before the LLM yet)."""
        tokens = self.pooled**2
        if selection.kept_count(tokens, (1, self.pooled, self.pooled)) < tokens:
            raise UnsupportedFeatureError(
                f"{selection!r} reduces still images at the projector, but LLaVA-OneVision's images (AnyRes crops, "
                "unpadded, with newline features) cannot be reduced before the LLM yet; only its videos can. Use a "
                "temporal strategy (evs, dycoke, vidcom2, temporal_pyramiddrop), which leaves images whole, or an "
                "LLM-side one (pyramiddrop)."
            )

    def encoder_refusal(self, model_name: str) -> str:
        return (
            f"Reduction inside the vision tower of {model_name} is not supported: its image features are cropped, "
            "unpadded and given newline features after the tower, and its video frames are pooled 2x2 after the "
            "projector. Reduce videos at the projector (evs, dycoke, vidcom2) or tokens inside the LLM (pyramiddrop)."
        )

    def grids(self, args: tuple, kwargs: dict[str, Any]) -> Tensor:
        raise UnsupportedFeatureError("LLaVA-OneVision's video layout is read from the video features (describe), not a tower call.")

    def received_attention(self, block_args, block_kwargs, tower_args, tower_kwargs) -> Tensor:
        return self._no_attention()

    def encode(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Encode images and videos as the stock forward does (``generate`` already did when no pixels remain)."""
        out = dict(kwargs)
        encoded = dict(out.get("mm_encoder_outputs") or {})
        layer, select = out.get("vision_feature_layer"), out.get("vision_feature_select_strategy")
        images, videos = out.pop("pixel_values", None), out.pop("pixel_values_videos", None)
        if images is not None:
            encoded["image"] = self.vlm.get_image_features(
                images, out.get("image_sizes"), vision_feature_layer=layer, vision_feature_select_strategy=select,
                batch_num_images=out.get("batch_num_images"), return_dict=True,
            )  # fmt: skip
        if videos is not None:
            encoded["video"] = self.vlm.get_video_features(
                videos, vision_feature_layer=layer, vision_feature_select_strategy=select, return_dict=True
            )
        out["mm_encoder_outputs"] = encoded
        return out

    def prompt_positions(self, kwargs: dict[str, Any]) -> Tensor:
        """The text model's default for a prefill: ``0..L-1`` in every row."""
        ref = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs.get("inputs_embeds")
        batch, length = ref.shape[:2]
        return torch.arange(length, device=ref.device).unsqueeze(0).expand(batch, -1)

    def decode_positions(self, text_positions: Tensor) -> Tensor:
        """1-D RoPE: a decode token's position is its position in the original prompt."""
        return text_positions
