"""The encoder-adapter contract: where a vision transformer's blocks are and how one block attends.

A vision encoder is not a decoder stack: no causal mask, no rotary table, no KV cache, a fixed
number of tokens per image and a few prefix tokens ([CLS], registers) that must never leave. So
encoder adapters have their own small contract (`EncoderAdapter`), registered through their own
hook (``tokenprune_register_encoder_adapters``), and driven by `tokenprune.encoder.EncoderEngine`.

An adapter only answers *where* and *how*: which modules are the blocks, how many prefix tokens
there are, how a block computes its queries and keys, and how the hidden states and an additive
key bias enter a block call. It never decides what to reduce.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = ["EncoderAdapter", "EncoderStack", "head_mean"]


@dataclass
class EncoderStack:
    """The located parts of one wrapped vision encoder.

    Attributes:
        blocks: the transformer blocks, in execution order.
        num_prefix: tokens at the start of the sequence that are never removed ([CLS], registers,
            distillation token).
        hidden_size: token width (for statistics).
        mlp_size: hidden width of a block's MLP (for statistics).
    """

    blocks: Sequence[nn.Module]
    num_prefix: int
    hidden_size: int
    mlp_size: int

    @property
    def num_layers(self) -> int:
        """Number of transformer blocks in the tower."""
        return len(self.blocks)


def head_mean(keys: Tensor) -> Tensor:
    """``(B, H, n, hd) -> (B, n, hd)``: keys averaged over heads (ToMe's similarity metric)."""
    return keys.mean(dim=1)


class EncoderAdapter(ABC):
    """Locates the blocks of one vision-encoder family and exposes how a block attends."""

    name: ClassVar[str]
    """Registry name, e.g. ``"timm_vit"``."""
    description: ClassVar[str] = ""
    """What the adapter handles (shown by ``tokenprune list``)."""

    @abstractmethod
    def matches(self, model: object) -> bool:
        """True when this adapter handles ``model``."""

    def check(self, model: nn.Module) -> None:
        """Raise a clear error for a model of this family the adapter cannot handle."""

    @abstractmethod
    def locate(self, model: nn.Module) -> EncoderStack:
        """Find the blocks of ``model``."""

    @abstractmethod
    def queries_keys(self, block: nn.Module, hidden: Tensor) -> tuple[Tensor, Tensor, float]:
        """``(q, k, scale)`` as ``block`` computes them from its input ``hidden`` (``(B, n, d)``).

        ``q`` and ``k`` are ``(B, H, n, head_dim)``: after the block's own pre-attention norm, its
        query/key projection and any per-head q/k norm; ``scale`` multiplies ``q @ k^T``.
        """

    def keys(self, block: nn.Module, hidden: Tensor) -> Tensor:
        """``(B, H, n, head_dim)`` keys only (merging needs no queries); override when cheaper."""
        return self.queries_keys(block, hidden)[1]

    @abstractmethod
    def hidden_of(self, block: nn.Module, args: tuple, kwargs: dict[str, Any]) -> Tensor:
        """The block call's hidden states as ``(B, n, d)`` (batch first)."""

    @abstractmethod
    def mask_of(self, block: nn.Module, args: tuple, kwargs: dict[str, Any]) -> Tensor | None:
        """The attention mask the caller passed to the block, if any."""

    @abstractmethod
    def with_inputs(
        self, block: nn.Module, args: tuple, kwargs: dict[str, Any], hidden: Tensor, key_bias: Tensor | None
    ) -> tuple[tuple, dict[str, Any]]:
        """The block call's ``(args, kwargs)`` with new hidden states and an additive key bias.

        Args:
            hidden: ``(B, n, d)`` batch-first hidden states.
            key_bias: ``(B, n)`` added to the attention logits of every query for each key (``log``
                size for proportional attention, ``-inf`` to hide a key), or ``None`` for no mask.
        """

    @staticmethod
    def bias_mask(key_bias: Tensor, num_queries: int, dtype: torch.dtype) -> Tensor:
        """``(B, 1, q, n)`` additive mask from a ``(B, n)`` key bias (large negative for ``-inf``)."""
        bias = key_bias.to(dtype).clamp(min=torch.finfo(dtype).min)
        return bias[:, None, None, :].expand(-1, 1, num_queries, -1)
