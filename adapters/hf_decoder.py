"""Shared adapter for transformers 5.x VLMs: ``Model.model.language_model.layers``.

Every VLM family in transformers 5.x has the same shape: the top ``*ForConditionalGeneration``
holds ``lm_head`` and ``.model`` (the VLM base), which holds a vision module and
``.language_model``, a base decoder with ``.layers``, ``.rotary_emb`` and ``.embed_tokens``.
Family adapters only add their ``model_types`` and visual-token ids.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..engine.placement import execution_device
from .base import Adapter, DecoderStack

__all__ = ["HFDecoderAdapter"]


_ROTATIONS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {}
"""Family module name -> its rotation (a constant per family; a plain dict, which dynamo reads as such)."""


def _rotation(attn: nn.Module) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """The rotation for ``attn``'s family (`_family_rotation`, looked up once per family module)."""
    name = type(attn).__module__
    rotate = _ROTATIONS.get(name)
    if rotate is None:
        rotate = _ROTATIONS[name] = _family_rotation(name)
    return rotate


def _family_rotation(module_name: str) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``rotate(x, cos, sin)``: the model's rotary embedding applied to one ``(B, H, n, d)`` tensor.

    transformers' ``apply_rotary_pos_emb`` rotates a (q, k) pair that shares one table, and here q
    (the query rows) and k (every slot) have tables of different lengths. Where the family module
    has the standard ``rotate_half`` (every family this adapter serves), the same expression is
    applied to the one tensor: the same operations in the same order, so the result is bitwise the
    model's. Elsewhere the model's function is called with an empty partner tensor.
    """
    module = sys.modules[module_name]
    rotate_half = getattr(module, "rotate_half", None)
    if rotate_half is None:
        rope = module.apply_rotary_pos_emb
        return lambda x, cos, sin: rope(x[:, :0], x, cos, sin)[1]

    def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        return (x * cos) + (rotate_half(x) * sin)

    return rotate


def _project_keys(attn: nn.Module, h: Tensor, cos: Tensor, sin: Tensor, per_head_norm: bool) -> Tensor:
    """``(B, H_kv, n, head_dim)`` post-rotary keys of the normalised input ``h``, as the attention computes
    (and caches) them; ``per_head_norm``: the family's per-head key norm sits between projection and RoPE."""
    batch, n, _ = h.shape
    k = attn.k_proj(h).view(batch, n, -1, attn.head_dim)
    if per_head_norm:
        k = attn.k_norm(k)
    return _rotation(attn)(k.transpose(1, 2), cos, sin)


def _on(table: Tensor, device: torch.device, batch: int) -> Tensor:
    """A rotary table on ``device`` with ``batch`` rows (transformers shares one row without position_ids)."""
    table = table if table.device == device else table.to(device)
    return table if table.shape[0] == batch else table.expand(batch, -1, -1)


class HFDecoderAdapter(Adapter):
    """Locates the stack of a transformers 5.x VLM and recomputes its attention rows."""

    reads_cached_keys: ClassVar[bool] = True

    visual_token_attrs: ClassVar[tuple[str, ...]] = ("image_token_id",)
    """Config attributes holding the ids of visual placeholder tokens."""

    def locate(self, model: nn.Module) -> DecoderStack:
        head, vlm = (model, model.model) if hasattr(model, "lm_head") else (None, model)
        language_model = vlm.language_model
        config = model.config
        ids = tuple(
            int(getattr(config, attr)) for attr in self.visual_token_attrs if getattr(config, attr, None) is not None
        )
        return DecoderStack(
            head=head,
            vlm=vlm,
            language_model=language_model,
            layers=language_model.layers,
            rotary=getattr(language_model, "rotary_emb", None),
            text_config=language_model.config,
            visual_token_ids=ids,
            embeddings=language_model.get_input_embeddings(),
        )

    def query_attention(
        self,
        layer: nn.Module,
        hidden: Tensor,
        position_embeddings: tuple[Tensor, Tensor],
        query: Tensor | None,
        allowed: Tensor | None,
        keys: Tensor | None = None,
    ) -> Tensor:
        attn = layer.self_attn
        # Under a device map the pre-hook sees the previous layer's device; with offloading the
        # weights are on "meta" until the projection's own hook loads them.
        device = execution_device(attn.q_proj)
        batch, n, width = hidden.shape
        head_dim = attn.head_dim
        # The norm is per token: with the layer's cached keys given, only the query rows need it.
        h = hidden if hidden.device == device else hidden.to(device)
        h = layer.input_layernorm(h) if keys is None else h
        if query is None:  # the last slot of every row: a view, not a gather
            rows = h[:, -1:]
        else:
            query = query.to(device)
            rows = h.gather(1, query.unsqueeze(-1).expand(-1, -1, width))
        rows = layer.input_layernorm(rows) if keys is not None else rows
        q = attn.q_proj(rows).view(batch, rows.shape[1], -1, head_dim)
        k = attn.k_proj(h).view(batch, n, -1, head_dim) if keys is None else None
        if hasattr(attn, "q_norm"):  # Qwen3-style per-head norms sit between projection and RoPE
            q, k = attn.q_norm(q), (attn.k_norm(k) if k is not None else None)
        q = q.transpose(1, 2)
        # Without position_ids transformers builds (1, n, head_dim) tables shared by the batch.
        cos, sin = (_on(t, device, batch) for t in position_embeddings)
        if query is None:
            cos_q, sin_q = cos[:, -1:], sin[:, -1:]
        else:
            cos_q = cos.gather(1, query.unsqueeze(-1).expand(-1, -1, cos.shape[-1]))
            sin_q = sin.gather(1, query.unsqueeze(-1).expand(-1, -1, sin.shape[-1]))
        rotate = _rotation(attn)
        q = rotate(q, cos_q, sin_q)
        k = rotate(k.transpose(1, 2), cos, sin) if keys is None else keys.to(device)  # computed as the layer caches them
        if q.shape[1] != k.shape[1]:  # grouped-query attention (a copy of k; skipped without groups)
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        logits = torch.matmul(q, k.transpose(-1, -2)) * attn.scaling  # (B, H, Q, n), model dtype like eager
        if allowed is not None:  # None: every key is visible (known on the host), nothing to mask
            logits = logits.masked_fill(~allowed.to(device).unsqueeze(1), float("-inf"))
        dtype = torch.promote_types(logits.dtype, torch.float32)
        return torch.softmax(logits, dim=-1, dtype=dtype).mean(dim=1)

    def layer_keys(
        self, layer: nn.Module, hidden: Tensor, position_embeddings: tuple[Tensor, Tensor], keys: Tensor | None = None
    ) -> Tensor:
        attn = layer.self_attn
        device = execution_device(attn.k_proj)
        batch, n, _ = hidden.shape
        if keys is None:
            cos, sin = (_on(t, device, batch) for t in position_embeddings)
            h = layer.input_layernorm(hidden if hidden.device == device else hidden.to(device))
            keys = _project_keys(attn, h, cos, sin, hasattr(attn, "k_norm"))
        k = keys
        heads = attn.q_proj.out_features // attn.head_dim
        if heads != k.shape[1]:  # grouped-query attention
            k = k.repeat_interleave(heads // k.shape[1], dim=1)
        return k.transpose(1, 2).reshape(batch, n, -1)
