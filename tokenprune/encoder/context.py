"""`EncoderContext`: what a Scorer and a Reducer see at one reduction point inside a vision encoder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import UnsupportedFeatureError
from ..interfaces import LayerChoice, ScoreContext

__all__ = ["EncoderContext", "block_attention"]


def block_attention(q: Tensor, k: Tensor, scale: float, key_bias: Tensor | None, rows: Tensor | None = None) -> Tensor:
    """``(B, H, q, n)`` softmax probabilities a block computes (fp32 or wider), optionally for some rows only.

    Args:
        q: ``(B, H, n, hd)`` queries from the block's own norm and projection.
        k: ``(B, H, n, hd)`` keys, likewise.
        scale: the block's logit scale.
        key_bias: ``(B, n)`` additive key bias the block sees (log sizes), or ``None``.
        rows: query slots to compute (``None``: all).
    """
    if rows is not None:
        q = q[:, :, rows]
    logits = torch.matmul(q, k.transpose(-1, -2)) * scale
    if key_bias is not None:
        logits = logits + key_bias.to(logits.dtype)[:, None, None, :]
    return torch.softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))


@dataclass
class EncoderContext(ScoreContext):
    """A `ScoreContext` inside a vision encoder, at the input of block ``layer_index``.

    Every sample holds the same slots (one image each), no fillers, no causal mask. The *query* is
    the class token (slot 0) when the encoder has one, so `QueryAttentionScorer` ranks patches by
    [CLS] attention (FasterVLM / VisionZip dominant tokens). Scores come from the block that is
    about to run: its own norm and q/k projections, with the current proportional-attention bias.

    Attributes:
        num_prefix: leading slots that are never removed ([CLS], registers).
        key_bias: ``(B, n)`` additive logit bias the block will apply (``None`` without one).
    """

    num_prefix: int = 0
    key_bias: Tensor | None = None
    _qk: Callable[[], tuple[Tensor, Tensor, float]] = field(repr=False, default=None)  # type: ignore[assignment]
    _keys: Callable[[], Tensor] | None = field(repr=False, default=None)

    @classmethod
    def at_block(
        cls,
        adapter: Any,
        block: torch.nn.Module,
        index: int,
        hidden: Tensor,
        *,
        positions: Tensor,
        valid: Tensor,
        visual: Tensor,
        num_prefix: int,
        sizes: Tensor | None = None,
        key_bias: Tensor | None = None,
    ) -> EncoderContext:
        """The context at the input of ``block`` (number ``index``), scored with that block's own weights.

        The query is the class token (slot 0) of every sample; attention and keys are computed
        lazily through the encoder ``adapter`` (``queries_keys`` / ``keys``) from ``hidden``.
        """
        batch = hidden.shape[0]
        return cls(
            layer_index=index,
            layer=block,
            hidden=hidden,
            positions=positions,
            valid=valid,
            visual=visual,
            query=torch.zeros(batch, 1, dtype=torch.long, device=hidden.device),
            query_weight=torch.ones(batch, 1, device=hidden.device),
            sizes=sizes,
            num_prefix=num_prefix,
            key_bias=key_bias,
            _qk=lambda: adapter.queries_keys(block, hidden),
            _keys=lambda: adapter.keys(block, hidden),
        )

    def _queries_keys(self) -> tuple[Tensor, Tensor, float]:
        if "qk" not in self._cache:
            self._cache["qk"] = self._qk()  # type: ignore[assignment]
        return self._cache["qk"]  # type: ignore[return-value]

    def attention(self) -> Tensor:
        """``(B, n)`` attention the class token pays to every slot, mean over heads."""
        if self.num_prefix == 0:
            raise UnsupportedFeatureError(
                "This encoder has no class token, so there is no [CLS] attention to rank by. "
                "Use ReceivedAttentionScorer (mean attention each token receives) instead."
            )
        if "attention" not in self._cache:
            q, k, scale = self._queries_keys()
            rows = torch.zeros(1, dtype=torch.long, device=q.device)
            self._cache["attention"] = block_attention(q, k, scale, self.key_bias, rows)[:, :, 0].mean(1)
        return self._cache["attention"]

    def attention_received(self, *, layer: LayerChoice = "current") -> Tensor:
        """``(B, n)`` attention each slot receives, averaged over every query and head.

        The same protocol as the LLM's `ScoreContext.attention_received`, so one scorer serves both
        sites. An encoder block's attention is bidirectional and scored by the block about to run;
        ``layer="previous"`` (FastV's LLM convention) does not apply here and is ignored.
        """
        if "received" not in self._cache:
            q, k, scale = self._queries_keys()
            self._cache["received"] = block_attention(q, k, scale, self.key_bias).mean(dim=(1, 2))
        return self._cache["received"]

    def match_features(self) -> Tensor:
        """``(B, n, head_dim)`` the block's keys averaged over heads (ToMe's similarity metric)."""
        if "keys" not in self._cache:
            if "qk" in self._cache or self._keys is None:
                k = self._queries_keys()[1]
            else:
                k = self._keys()  # keys only: a merge that ignores attention skips the query projection
            self._cache["keys"] = k.mean(dim=1)
        return self._cache["keys"]
