"""Scorers that rank visual tokens by attention other than the last instruction token's."""

from __future__ import annotations

import torch
from torch import Tensor

from ..interfaces import ALL_SITES, LayerChoice, ScoreContext, Scorer

__all__ = ["ReceivedAttentionScorer", "TextRaterScorer", "TextAttentionScorer", "text_tail"]


class ReceivedAttentionScorer(Scorer):
    """Average attention every token receives from all tokens of its sample (FastV's paper definition).

    In a vision-encoder block (towers without a [CLS] token, e.g. SigLIP: the VisionZip/VisPruner
    convention) it is the block's own attention received over every query and head.

    Args:
        layer: ``"previous"`` (default) computes with the layer below the reduction layer (FastV: the
            attention of layer K-1 decides what layer K sees); ``"current"`` with the reduction layer.
    """

    sites = ALL_SITES

    def __init__(self, layer: LayerChoice = "previous"):
        self.layer = layer

    def score(self, ctx: ScoreContext) -> Tensor:
        # One protocol at every site: in a vision-encoder block the context answers with the block's own
        # bidirectional attention (every query) and ignores the layer choice.
        return ctx.attention_received(layer=self.layer)

    def __repr__(self) -> str:
        return f"ReceivedAttentionScorer(layer={self.layer!r})"


def text_tail(ctx: ScoreContext) -> Tensor:
    """``(B, n)`` real text slots after the last visual token of each sample (the question)."""
    n = ctx.valid.shape[1]
    order = torch.arange(n, device=ctx.valid.device).expand_as(ctx.valid)
    last_visual = torch.where(ctx.visual, order, -1).max(1, keepdim=True).values
    return ctx.valid & ~ctx.visual & (order > last_visual)


class TextRaterScorer(Scorer):
    """Attention from the text tokens relevant to the image ("raters"), averaged (SparseVLM-style).

    Raters: of the text after the image, the tokens whose mean (over visual tokens) softmax relevance
    ``softmax_text(H_v H_qᵀ)`` exceeds the mean relevance (SparseVLM's rule, strict ``>``). The score
    of a visual token is the raters' mean attention to it (head-mean of probabilities). A sample
    without text after its image rates with its query token(s).

    Args:
        layer: ``"previous"`` (default; SparseVLM scores with the layer whose output it prunes) or
            ``"current"``.

    Deviation from the paper: raters are chosen from the hidden states entering the reduction layer,
    not once from the LLM's input embeddings (the engine sees only the reduction layer).
    """

    def __init__(self, layer: LayerChoice = "previous"):
        self.layer = layer

    def raters(self, ctx: ScoreContext) -> tuple[Tensor, Tensor]:
        """``(B, R)`` rater slots and ``(B, R)`` weights (uniform over each sample's raters)."""
        tail = text_tail(ctx)
        hidden = ctx.hidden.to(torch.promote_types(ctx.hidden.dtype, torch.float32))
        chosen = torch.zeros_like(tail)
        for b in range(tail.shape[0]):
            q_slots = tail[b].nonzero().squeeze(1)
            v_slots = ctx.visual[b].nonzero().squeeze(1)
            if len(q_slots) == 0 or len(v_slots) == 0:
                continue
            relevance = torch.softmax(hidden[b, v_slots] @ hidden[b, q_slots].T, dim=-1).mean(0)
            chosen[b, q_slots[relevance > relevance.mean()]] = True
        none = ~chosen.any(1)
        if bool(none.any()):  # fall back to the query token(s)
            fallback = torch.zeros_like(chosen).scatter_(1, ctx.query, True)
            chosen = torch.where(none[:, None], fallback, chosen)
        count = chosen.sum(1)
        width = int(count.max())
        slots = torch.sort((~chosen).int(), dim=1, stable=True).indices[:, :width]
        weight = (torch.arange(width, device=count.device)[None] < count[:, None]).to(torch.float32)
        return slots, weight / count.clamp(min=1)[:, None]

    def score(self, ctx: ScoreContext) -> Tensor:
        slots, weight = self.raters(ctx)
        return ctx.attention_from(slots, weight, layer=self.layer)

    def __repr__(self) -> str:
        return f"TextRaterScorer(layer={self.layer!r})"


class TextAttentionScorer(Scorer):
    """Mean attention of every text token after the image, plus the query token(s) (multi-query scoring).

    A many-query variant of PyramidDrop's last-token score: the whole instruction rates the visual
    tokens, each query row weighted equally. A sample without text after its image rates with its
    query token(s) alone.

    Args:
        layer: ``"current"`` (default, PyramidDrop's layer) or ``"previous"``.
    """

    def __init__(self, layer: LayerChoice = "current"):
        self.layer = layer

    def score(self, ctx: ScoreContext) -> Tensor:
        rows = text_tail(ctx).scatter(1, ctx.query, True) & ctx.valid
        count = rows.sum(1)
        width = max(int(count.max()), 1)
        slots = torch.sort((~rows).int(), dim=1, stable=True).indices[:, :width]
        weight = (torch.arange(width, device=count.device)[None] < count[:, None]).to(torch.float32)
        return ctx.attention_from(slots, weight / count.clamp(min=1)[:, None], layer=self.layer)

    def __repr__(self) -> str:
        return f"TextAttentionScorer(layer={self.layer!r})"
