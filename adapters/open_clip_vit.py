"""open_clip ``VisionTransformer`` (the image tower of open_clip's CLIP models).

Blocks are ``ResidualAttentionBlock(q_x, k_x=None, v_x=None, attn_mask=None)`` with ``ln_1`` and a
``torch.nn.MultiheadAttention`` (one packed ``in_proj_weight``). A class token sits at index 0.
The transformer may run sequence-first (``batch_first=False``, older open_clip): the adapter turns
that into batch-first for the engine and back for the block.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from ..errors import UnsupportedFeatureError
from ..hookspecs import hookimpl
from .encoder_base import EncoderAdapter, EncoderStack

__all__ = ["OpenClipViTAdapter"]


def _classes() -> tuple[type, type] | None:
    try:
        from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
    except ImportError:  # open_clip is optional (the `vision` extra)
        return None
    return VisionTransformer, ResidualAttentionBlock


class OpenClipViTAdapter(EncoderAdapter):
    """`open_clip.transformer.VisionTransformer` (wrap ``clip_model.visual``) with standard blocks."""

    name = "open_clip_vit"
    description = "open_clip VisionTransformer (ResidualAttentionBlock with nn.MultiheadAttention)"

    def matches(self, model: object) -> bool:
        classes = _classes()
        return classes is not None and isinstance(model, classes[0])

    def check(self, model: nn.Module) -> None:
        _, block_cls = _classes()  # type: ignore[misc]
        for i, block in enumerate(model.transformer.resblocks):
            if type(block) is not block_cls or not isinstance(block.attn, nn.MultiheadAttention):
                raise UnsupportedFeatureError(
                    f"Block {i} of this open_clip tower is a {type(block).__name__}; tokenprune supports the standard "
                    "ResidualAttentionBlock (block_type=None, no scaled-cosine or head-scaled attention)."
                )
            if block.attn.in_proj_weight is None:
                raise UnsupportedFeatureError(
                    f"Block {i} uses separate q/k/v projections in nn.MultiheadAttention; tokenprune expects the packed "
                    "in_proj_weight open_clip builds."
                )
        if getattr(model, "class_embedding", None) is None:
            raise UnsupportedFeatureError("This open_clip tower has no class token; tokenprune expects one at index 0.")

    def locate(self, model: nn.Module) -> EncoderStack:
        first = model.transformer.resblocks[0]
        return EncoderStack(
            blocks=list(model.transformer.resblocks),
            num_prefix=1,
            hidden_size=int(model.transformer.width),
            mlp_size=int(first.mlp.c_fc.out_features),
        )

    def queries_keys(self, block: nn.Module, hidden: Tensor) -> tuple[Tensor, Tensor, float]:
        attn = block.attn
        x = block.ln_1(hidden.to(attn.in_proj_weight.device))
        batch, n, width = x.shape
        heads = attn.num_heads
        weight, bias = attn.in_proj_weight[: 2 * width], None
        if attn.in_proj_bias is not None:
            bias = attn.in_proj_bias[: 2 * width]
        q, k = F.linear(x, weight, bias).view(batch, n, 2, heads, width // heads).permute(2, 0, 3, 1, 4)
        return q, k, (width // heads) ** -0.5

    def keys(self, block: nn.Module, hidden: Tensor) -> Tensor:
        attn = block.attn
        x = block.ln_1(hidden.to(attn.in_proj_weight.device))
        batch, n, width = x.shape
        heads = attn.num_heads
        bias = attn.in_proj_bias[width : 2 * width] if attn.in_proj_bias is not None else None
        k = F.linear(x, attn.in_proj_weight[width : 2 * width], bias)
        return k.view(batch, n, heads, width // heads).transpose(1, 2)

    def hidden_of(self, block: nn.Module, args: tuple, kwargs: dict[str, Any]) -> Tensor:
        hidden = args[0] if args else kwargs["q_x"]
        return hidden if block.attn.batch_first else hidden.transpose(0, 1)

    def mask_of(self, block: nn.Module, args: tuple, kwargs: dict[str, Any]) -> Tensor | None:
        return args[3] if len(args) > 3 else kwargs.get("attn_mask")

    def with_inputs(self, block, args, kwargs, hidden, key_bias):
        kwargs = dict(kwargs)
        if len(args) > 1 and any(a is not None for a in args[1:3]):
            raise UnsupportedFeatureError("Cross-attention blocks (k_x/v_x given) cannot be reduced.")
        if key_bias is not None:
            batch, n = key_bias.shape
            heads = block.attn.num_heads
            mask = self.bias_mask(key_bias, n, hidden.dtype).expand(batch, heads, n, n).reshape(batch * heads, n, n)
            kwargs["attn_mask"] = mask
            args = args[:1]  # grad checkpointing passes (x, None, None, attn_mask) positionally
        hidden = hidden if block.attn.batch_first else hidden.transpose(0, 1)
        if args:
            return (hidden, *args[1:]), kwargs
        kwargs["q_x"] = hidden
        return args, kwargs


@hookimpl
def tokenprune_register_encoder_adapters(register) -> None:
    register(OpenClipViTAdapter())
