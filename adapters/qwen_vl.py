"""Qwen-VL family: Qwen2-VL, Qwen2.5-VL and Qwen3-VL (stock transformers classes).

* Image and video tokens are visual; ``<|vision_start|>`` / ``<|vision_end|>`` are text.
* 3-D M-RoPE: the rotary module has already folded the (t, h, w) sections into one
  ``(B, L, head_dim)`` table, so slicing it keeps every kept token's original rotation exactly;
  ``rope_deltas`` and decode positions need nothing. Renumbered ("compact") positions are undefined.
* Qwen3-VL adds "deepstack" visual features to the outputs of its first layers with a full-length
  mask, so no reduction may happen before those layers are done.
* Projector-side reduction (Qwen2-VL, Qwen2.5-VL; `QwenPackedVision`): every image gives
  ``t * h * w / 4`` tokens after the 2x2 patch merger, all images packed into one sequence. The
  tower's blocks need whole 2x2 windows, so tokens are selected after the merger, per image; the
  attention a merged token receives is read from the tower's last block (Qwen2-VL: full attention
  within each image or video frame; Qwen2.5-VL: its last block is a full-attention block in the
  released configs, and the block's own segments are used whatever they are). Qwen2.5-VL runs its
  blocks in window order; scores are put back in the merger output's raster order.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..cost import VisionDims
from ..errors import UnsupportedFeatureError
from ..hookspecs import RegisterAdapter, hookimpl
from ..video_layout import VideoGrid, VideoShape
from .base import PackedVision, VisionTower, pad_token_id
from .hf_decoder import HFDecoderAdapter

__all__ = ["QwenVLAdapter", "QwenPackedVision"]

def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class QwenPackedVision(PackedVision):
    """Where Qwen2-VL / Qwen2.5-VL keep their packed visual tokens (see the module docstring).

    Args:
        vlm: the ``Qwen2VLModel`` / ``Qwen2_5_VLModel`` (the module holding ``visual``).
    """

    def __init__(self, vlm: nn.Module):
        self.vlm = vlm
        self.tower = vlm.visual
        self.score_block = vlm.visual.blocks[-1]
        config = vlm.config
        self.modalities = {"image": int(config.image_token_id), "video": int(config.video_token_id)}
        self.merge = int(vlm.visual.spatial_merge_size)

    @staticmethod
    def _grid_thw(args: tuple, kwargs: dict[str, Any]) -> Tensor:
        grid = args[1] if len(args) > 1 else kwargs.get("grid_thw")
        if grid is None:
            raise UnsupportedFeatureError("The Qwen vision tower was called without grid_thw; call it as the VLM does.")
        return grid

    def grids(self, args: tuple, kwargs: dict[str, Any]) -> Tensor:
        grid = self._grid_thw(args, kwargs).long()
        return torch.stack([grid[:, 0], grid[:, 1] // self.merge, grid[:, 2] // self.merge], dim=1)

    def _merge_order(self, grid_thw: Tensor) -> Tensor | None:
        """Qwen2.5-VL runs its blocks with the merge units in window order: that order, else ``None``."""
        visual = self.tower
        if getattr(visual, "window_size", None) is None:
            return None
        from transformers.vision_utils import get_vision_window_index

        index, _ = get_vision_window_index(
            grid_thw, spatial_merge_size=self.merge, window_size=visual.window_size, patch_size=visual.patch_size
        )
        return index

    def received_attention(self, block_args, block_kwargs, tower_args, tower_kwargs) -> Tensor:
        block = self.score_block
        hidden = block_args[0] if block_args else block_kwargs["hidden_states"]
        cu_seqlens = block_args[1] if len(block_args) > 1 else block_kwargs["cu_seqlens"]
        cos, sin = block_kwargs["position_embeddings"] if "position_embeddings" in block_kwargs else block_args[2]
        attn = block.attn
        n = hidden.shape[0]
        dtype = torch.promote_types(hidden.dtype, torch.float32)
        qkv = attn.qkv(block.norm1(hidden)).reshape(n, 3, attn.num_heads, -1).permute(1, 0, 2, 3)
        q, k = qkv[0].to(dtype), qkv[1].to(dtype)  # (n, H, hd)
        cos, sin = cos.unsqueeze(-2).to(dtype), sin.unsqueeze(-2).to(dtype)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        received = torch.empty(n, dtype=dtype, device=hidden.device)
        bounds = cu_seqlens.tolist()
        for start, end in zip(bounds[:-1], bounds[1:]):
            qs, ks = q[start:end].transpose(0, 1), k[start:end].transpose(0, 1)  # (H, m, hd)
            probs = torch.softmax(qs @ ks.transpose(-1, -2) * attn.scaling, dim=-1)
            received[start:end] = probs.mean(dim=(0, 1))
        merged = received.view(-1, self.merge**2).mean(-1)  # a merge unit's patches are consecutive
        order = self._merge_order(self._grid_thw(tower_args, tower_kwargs))
        if order is not None:
            merged = merged[torch.argsort(order.to(merged.device))]
        return merged

    def encoder_refusal(self, model_name: str) -> str:
        return (
            f"Reduction inside the vision tower of {model_name} is not supported: its patch merger "
            "needs every 2x2 window of patches whole (so ToMe cannot run between its blocks). Merge after the "
            "merger instead: VisionLanguageStrategy(projector=ProjectorSelection(ratio, NullScorer(), BipartiteMerge()))."
        )

    def encode(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        out = dict(kwargs)
        encoded = dict(out.get("mm_encoder_outputs") or {})
        for modality, pixels, grid in (("image", "pixel_values", "image_grid_thw"), ("video", "pixel_values_videos", "video_grid_thw")):
            if out.get(pixels) is not None:
                encode = getattr(self.vlm, f"get_{modality}_features")
                encoded[modality] = encode(out.pop(pixels), out.get(grid), return_dict=True)
            else:
                out.pop(pixels, None)
        out["mm_encoder_outputs"] = encoded
        return out

    def prompt_positions(self, kwargs: dict[str, Any]) -> Tensor:
        ids, embeds = kwargs.get("input_ids"), kwargs.get("inputs_embeds")
        ref = ids if ids is not None else embeds
        batch, length = ref.shape[:2]
        call = dict(kwargs)
        call["inputs_embeds"] = embeds if embeds is not None else torch.empty(batch, length, 0, device=ref.device)
        wanted = inspect.signature(self.vlm.compute_3d_position_ids).parameters
        positions = self.vlm.compute_3d_position_ids(**{k: call.get(k) for k in wanted if k != "self"})
        if positions is None:  # the text model's own default
            positions = torch.arange(length, device=ref.device).view(1, 1, -1).expand(3, batch, -1)
        return positions

    def decode_positions(self, text_positions: Tensor) -> Tensor:
        positions = text_positions[None].expand(3, -1, -1)
        deltas = self.vlm.rope_deltas
        if deltas is None:
            return positions
        deltas = deltas.repeat_interleave(text_positions.shape[0] // deltas.shape[0], dim=0)
        return positions + deltas.to(positions.device)


class QwenVLAdapter(HFDecoderAdapter):
    """`Qwen2VLForConditionalGeneration`, `Qwen2_5_VLForConditionalGeneration`, `Qwen3VLForConditionalGeneration`."""

    name = "qwen_vl"
    model_types = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
    preset_types: ClassVar[dict[str, str]] = {"qwen2-vl": "qwen2_vl", "qwen2.5-vl": "qwen2_5_vl"}
    visual_token_attrs = ("image_token_id", "video_token_id")
    supports_compact_positions = False

    def min_reduction_layer(self, model: nn.Module) -> tuple[int, str]:
        vision = getattr(model.config, "vision_config", None)
        deepstack = len(getattr(vision, "deepstack_visual_indexes", None) or ())
        if deepstack:
            return deepstack, f"its first {deepstack} layers receive deepstack visual features at full length"
        return super().min_reduction_layer(model)

    def vision_dims(self, config: Any, text_hidden: int) -> VisionDims | None:
        """One packed sequence per image (no crops, no [CLS]); the patch merger joins
        ``spatial_merge_size^2`` patches into one LLM token through a two-layer MLP."""
        vision = getattr(config, "vision_config", None)
        depth = getattr(vision, "depth", None)
        embed = getattr(vision, "embed_dim", None) or getattr(vision, "hidden_size", None)
        if depth is None or embed is None:
            return super().vision_dims(config, text_hidden)
        mlp = getattr(vision, "intermediate_size", None) or int(embed * getattr(vision, "mlp_ratio", 4))
        merge = int(getattr(vision, "spatial_merge_size", 2)) ** 2
        merged = int(embed) * merge
        return VisionDims(
            num_layers=int(depth), hidden_size=int(embed), intermediate_size=int(mlp),
            num_heads=int(getattr(vision, "num_heads", 16)), visual_tokens_per_crop=None,
            patches_per_visual_token=merge, extra_tokens=0,
            projector=((merged, merged), (merged, text_hidden)),
        )  # fmt: skip

    def video_grid(self, config: Any, shape: VideoShape) -> VideoGrid:
        """The processor rounds each side to a multiple of ``patch * merge`` px and pads the frames to a
        multiple of the temporal patch; the tower makes ``frames / temporal_patch x height / patch x
        width / patch`` patches (each temporal patch one attention sequence) and the merger a
        ``T x h x w`` grid of tokens (``h = height / (patch * merge)``)."""
        vision = config.vision_config
        patch, merge = int(vision.patch_size), int(vision.spatial_merge_size)
        temporal = shape.temporal_patch or int(getattr(vision, "temporal_patch_size", 2))
        unit = patch * merge
        rows, cols = max(1, round(shape.height / unit)), max(1, round(shape.width / unit))
        frames = math.ceil(shape.frames / temporal)
        per_frame = rows * cols * merge * merge
        return VideoGrid(frames, rows, cols, 0, (per_frame,) * frames, frames * rows * cols)

    def vision_tower(self, model: nn.Module) -> VisionTower:
        """Qwen2-VL / Qwen2.5-VL: per-image token counts, selection after the patch merger.

        Raises:
            UnsupportedFeatureError: Qwen3-VL (its DeepStack features would need the same selection).
        """
        config = model.config
        if getattr(config.vision_config, "deepstack_visual_indexes", None):
            raise UnsupportedFeatureError(
                f"Projector-side reduction is not supported for {type(model).__name__} yet: its DeepStack features are "
                "added at every visual position of its first decoder layers. Use LLM-side reduction "
                "(e.g. tokenprune.wrap(model, 'pyramiddrop'))."
            )
        vlm = model.model if hasattr(model, "lm_head") else model
        return VisionTower(
            tower=vlm.visual,
            feature_layer=-1,
            strip_prefix=True,
            image_token_id=int(config.image_token_id),
            patches_per_image=0,
            pad_token_id=pad_token_id(model),
            packed=QwenPackedVision(vlm),
        )


@hookimpl
def tokenprune_register_adapters(register: RegisterAdapter) -> None:
    register(QwenVLAdapter())
