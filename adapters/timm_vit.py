"""timm ``VisionTransformer`` (ViT, DeiT, CLIP/SigLIP/EVA-style checkpoints built on timm's ``Block``).

timm's blocks are ``Block(x, attn_mask=None)`` with ``norm1`` then ``attn.qkv`` (one fused
projection), optional per-head ``q_norm``/``k_norm``. ``num_prefix_tokens`` counts the class,
distillation and register tokens, which are never removed.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from ..errors import UnsupportedFeatureError
from ..hookspecs import hookimpl
from .encoder_base import EncoderAdapter, EncoderStack

__all__ = ["TimmViTAdapter"]


def _vit_class() -> type | None:
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:  # timm is optional (the `vision` extra)
        return None
    return VisionTransformer


class TimmViTAdapter(EncoderAdapter):
    """`timm.models.vision_transformer.VisionTransformer` with timm's standard ``Block``/``Attention``."""

    name = "timm_vit"
    description = "timm VisionTransformer (Block with fused qkv)"

    def matches(self, model: object) -> bool:
        cls = _vit_class()
        return cls is not None and isinstance(model, cls)

    def check(self, model: nn.Module) -> None:
        from timm.models.vision_transformer import Attention

        for i, block in enumerate(model.blocks):
            attn = getattr(block, "attn", None)
            if not isinstance(attn, Attention) or not hasattr(block, "norm1"):
                raise UnsupportedFeatureError(
                    f"Block {i} of this timm model is a {type(block).__name__} with {type(attn).__name__} attention; "
                    "tokenprune supports timm's standard Block (norm1 + Attention with a fused qkv). "
                    "Use a model built from timm's Block (e.g. vit_*, deit_*), or register an encoder adapter."
                )
            if "attn_mask" not in inspect.signature(block.forward).parameters:
                raise UnsupportedFeatureError(
                    "This timm version's Block takes no attn_mask, which proportional attention needs. "
                    "Upgrade timm (pip install 'timm>=1.0.15')."
                )

    def locate(self, model: nn.Module) -> EncoderStack:
        first = model.blocks[0]
        return EncoderStack(
            blocks=list(model.blocks),
            num_prefix=int(model.num_prefix_tokens),
            hidden_size=int(model.embed_dim),
            mlp_size=int(first.mlp.fc1.out_features) if hasattr(first.mlp, "fc1") else 4 * int(model.embed_dim),
        )

    def queries_keys(self, block: nn.Module, hidden: Tensor) -> tuple[Tensor, Tensor, float]:
        attn = block.attn
        x = block.norm1(hidden.to(attn.qkv.weight.device))
        batch, n, _ = x.shape
        qkv = attn.qkv(x).reshape(batch, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
        return q, k, float(attn.scale)

    def keys(self, block: nn.Module, hidden: Tensor) -> Tensor:
        attn = block.attn
        x = block.norm1(hidden.to(attn.qkv.weight.device))
        batch, n, _ = x.shape
        width = attn.num_heads * attn.head_dim
        bias = attn.qkv.bias[width : 2 * width] if attn.qkv.bias is not None else None
        k = F.linear(x, attn.qkv.weight[width : 2 * width], bias).view(batch, n, attn.num_heads, attn.head_dim)
        return attn.k_norm(k.transpose(1, 2))

    def hidden_of(self, block: nn.Module, args: tuple, kwargs: dict[str, Any]) -> Tensor:
        return args[0] if args else kwargs["x"]

    def mask_of(self, block: nn.Module, args: tuple, kwargs: dict[str, Any]) -> Tensor | None:
        return args[1] if len(args) > 1 else kwargs.get("attn_mask")

    def with_inputs(self, block, args, kwargs, hidden, key_bias):
        kwargs = dict(kwargs)
        rest = args[1:] if args else ()
        if key_bias is not None:
            rest = ()  # attn_mask goes by keyword; is_causal never comes positionally from timm
            kwargs["attn_mask"] = self.bias_mask(key_bias, hidden.shape[1], hidden.dtype)
        if args:
            return (hidden, *rest), kwargs
        kwargs["x"] = hidden
        return args, kwargs


@hookimpl
def tokenprune_register_encoder_adapters(register) -> None:
    register(TimmViTAdapter())
