"""transformers vision towers: ``CLIPVisionModel`` and ``SiglipVisionModel`` (also inside LLaVA).

Both hold ``vision_model.encoder.layers``, each layer ``(hidden_states, attention_mask, **kw)``
with ``layer_norm1`` and ``self_attn.q_proj``/``k_proj``. CLIP prepends a [CLS] token (one
protected prefix token); SigLIP has none (its pooling head attends over every token, so a reduced
sequence pools over the survivors).

The towers of Qwen-VL (windowed attention over a packed, rotary-encoded sequence with 2x2 patch
merging after the blocks) and InternVL (pixel-shuffle after the blocks) do not run one rectangular
``(B, n, d)`` sequence per image through plain blocks; they are recognised and rejected with a
message rather than mis-handled.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..errors import UnsupportedFeatureError
from ..hookspecs import hookimpl
from .encoder_base import EncoderAdapter, EncoderStack

__all__ = ["HFVisionAdapter", "UNSUPPORTED_TOWERS"]

UNSUPPORTED_TOWERS = {
    "qwen2_vl_vision": "Qwen2-VL's tower packs all images into one sequence and its 2x2 patch merger needs every window "
    "whole (so ToMe cannot run between its blocks); wrap the whole VLM with a projector-side strategy instead "
    "(e.g. 'divprune', or for ToMe VisionLanguageStrategy(projector=ProjectorSelection(ratio, NullScorer(), BipartiteMerge())))",
    "qwen2_5_vl_vision": "Qwen2.5-VL's tower packs all images into one sequence with windowed attention and its 2x2 patch "
    "merger needs every window whole (so ToMe cannot run between its blocks); wrap the whole VLM with a projector-side "
    "strategy instead (e.g. 'divprune', or for ToMe VisionLanguageStrategy(projector=ProjectorSelection(ratio, NullScorer(), "
    "BipartiteMerge())))",
    "qwen3_vl_vision": "Qwen3-VL's tower packs all images into one sequence and taps deepstack features mid-tower",
    "internvl_vision": "InternVL's tower feeds a pixel-shuffle that needs the full square token grid",
}
"""Vision-config model types that are recognised but not supported, and why."""


class HFVisionAdapter(EncoderAdapter):
    """`CLIPVisionModel` / `SiglipVisionModel` (and their ``vision_model`` transformers)."""

    name = "hf_vision"
    description = "transformers CLIPVisionModel, SiglipVisionModel"
    model_types = ("clip_vision_model", "siglip_vision_model")

    def matches(self, model: object) -> bool:
        kind = getattr(getattr(model, "config", None), "model_type", None)
        return kind in self.model_types or kind in UNSUPPORTED_TOWERS

    def check(self, model: nn.Module) -> None:
        kind = model.config.model_type
        if kind in UNSUPPORTED_TOWERS:
            raise UnsupportedFeatureError(
                f"Encoder-side reduction is not supported for {type(model).__name__}: {UNSUPPORTED_TOWERS[kind]}. "
                "Use LLM-side reduction on the whole model instead (tokenprune.wrap(vlm, 'pyramiddrop'))."
            )
        impl = str(getattr(model.config, "_attn_implementation", None) or "eager")
        if "flex" in impl:
            raise UnsupportedFeatureError(
                "Flex attention is not supported in vision towers yet; load the tower with attn_implementation='sdpa'."
            )

    @staticmethod
    def _transformer(model: nn.Module) -> nn.Module:
        return model.vision_model if hasattr(model, "vision_model") else model

    def locate(self, model: nn.Module) -> EncoderStack:
        tower = self._transformer(model)
        config = model.config
        return EncoderStack(
            blocks=list(tower.encoder.layers),
            num_prefix=1 if hasattr(tower.embeddings, "class_embedding") else 0,
            hidden_size=int(config.hidden_size),
            mlp_size=int(config.intermediate_size),
        )

    def queries_keys(self, block: nn.Module, hidden: Tensor) -> tuple[Tensor, Tensor, float]:
        attn = block.self_attn
        x = block.layer_norm1(hidden.to(attn.q_proj.weight.device))
        batch, n, _ = x.shape
        q = attn.q_proj(x).view(batch, n, -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(batch, n, -1, attn.head_dim).transpose(1, 2)
        return q, k, float(attn.scale)

    def keys(self, block: nn.Module, hidden: Tensor) -> Tensor:
        attn = block.self_attn
        x = block.layer_norm1(hidden.to(attn.k_proj.weight.device))
        batch, n, _ = x.shape
        return attn.k_proj(x).view(batch, n, -1, attn.head_dim).transpose(1, 2)

    def hidden_of(self, block: nn.Module, args: tuple, kwargs: dict[str, Any]) -> Tensor:
        return args[0] if args else kwargs["hidden_states"]

    def mask_of(self, block: nn.Module, args: tuple, kwargs: dict[str, Any]) -> Tensor | None:
        return args[1] if len(args) > 1 else kwargs.get("attention_mask")

    def with_inputs(self, block, args, kwargs, hidden, key_bias):
        kwargs = dict(kwargs)
        mask = self.mask_of(block, args, kwargs)
        if key_bias is not None:
            impl = str(getattr(block.self_attn.config, "_attn_implementation", None) or "eager")
            if impl.startswith("flash"):
                raise UnsupportedFeatureError(
                    "Proportional attention adds log(size) to the attention logits, which FlashAttention cannot take. "
                    "Load the tower with attn_implementation='sdpa', or use proportional_attention=False."
                )
            mask = self.bias_mask(key_bias, hidden.shape[1], hidden.dtype)
        if len(args) > 1:
            return (hidden, mask, *args[2:]), kwargs
        kwargs["attention_mask"] = mask
        if args:
            return (hidden,), kwargs
        kwargs["hidden_states"] = hidden
        return args, kwargs


@hookimpl
def tokenprune_register_encoder_adapters(register) -> None:
    register(HFVisionAdapter())
