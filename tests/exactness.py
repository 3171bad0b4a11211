"""Independent references for the exactness contract (docs/concepts.md, "The exactness contract").

Nothing here uses the engine's own bookkeeping: a reference run is the *unwrapped* model, full
length, in which the tokens a stage removed are only masked out as keys (same positions). If the
engine sliced a mask, a rotary table or a cache wrongly, the two disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tokenprune import Strategy
from tokenprune.components import StageScheduler, TopKDrop
from tokenprune.interfaces import ScoreContext, Scorer

Selection = list[tuple[int, Tensor, Tensor]]

MEASURED: dict[str, dict[str, float]] = {}
"""check -> cell -> largest difference measured (reported by conftest's terminal summary)."""


def record(check: str, cell: str, value: float) -> float:
    """Remember the largest ``value`` seen for ``check`` in ``cell``; return it."""
    cells = MEASURED.setdefault(check, {})
    cells[cell] = max(cells.get(cell, 0.0), value)
    return value


def layer_visibility(selection: Selection, length: int, num_layers: int) -> list[Tensor]:
    """``[layer] -> (B, length)`` True where a token is still present (a visible key) at that layer."""
    visible = []
    batch = selection[0][1].shape[0]
    for layer in range(num_layers):
        stage = [s for s in selection if s[0] <= layer][-1]
        _, idx, valid = stage
        keep = torch.zeros(batch, length, dtype=torch.bool)
        keep.scatter_(1, idx, valid)
        visible.append(keep)
    return visible


def masked_reference_hooks(model, selection: Selection, attention_mask: Tensor | None, extra: int = 0):
    """Pre-hooks on every decoder layer of the unwrapped ``model`` that mask removed tokens as keys.

    ``extra`` counts tokens appended after the prompt (generated text), always visible.
    Returns the hook handles (remove them after the reference run).
    """
    layers = model.model.language_model.layers
    length = selection[0][1].shape[1]
    visible = layer_visibility(selection, length, len(layers))
    batch = visible[0].shape[0]
    total = length + extra
    pad = torch.ones(batch, total, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    causal = torch.tril(torch.ones(total, total, dtype=torch.bool))
    eye = torch.eye(total, dtype=torch.bool)
    handles = []
    for i, layer in enumerate(layers):
        keys = torch.cat([visible[i], torch.ones(batch, extra, dtype=torch.bool)], dim=1) & pad
        allowed = (causal[None] & keys[:, None, :]) | eye[None]  # a row always sees itself: no NaN rows
        impl = model.config.text_config._attn_implementation
        dtype = next(model.parameters()).dtype
        if impl == "eager":
            mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
        else:
            mask = allowed[:, None]

        def hook(module, args, kwargs, mask=mask):
            kwargs = dict(kwargs)
            kwargs["attention_mask"] = mask
            return args, kwargs

        handles.append(layer.register_forward_pre_hook(hook, with_kwargs=True))
    return handles


class ReplayScorer(Scorer):
    """Scores 1 for the tokens a recorded selection kept at this layer, 0 otherwise.

    With the same schedule and a stable top-k, the engine then removes exactly the recorded tokens:
    a no-cache forward over a longer sequence (prompt + generated text) replays a cached run.
    """

    def __init__(self, selection: Selection):
        self.kept = {layer: (idx, valid) for layer, idx, valid in selection}

    def score(self, ctx: ScoreContext) -> Tensor:
        idx, valid = self.kept[ctx.layer_index]
        kept = torch.where(valid, idx, -1)
        hit = (ctx.positions.unsqueeze(-1) == kept.unsqueeze(1)).any(-1)
        return hit.to(ctx.hidden.dtype)


class RecordingScorer(Scorer):
    """Delegates to another scorer and keeps every context's attention row (for score checks)."""

    def __init__(self, inner: Scorer):
        self.inner = inner
        self.seen: dict[int, tuple[Tensor, Tensor]] = {}
        self.queries: dict[int, tuple[Tensor, Tensor]] = {}

    def score(self, ctx: ScoreContext) -> Tensor:
        out = self.inner.score(ctx)
        self.seen[ctx.layer_index] = (ctx.attention().clone(), ctx.positions.clone())
        self.queries[ctx.layer_index] = (ctx.positions.gather(1, ctx.query), ctx.query_weight.clone())
        return out


def replay_strategy(selection: Selection, boundaries: Sequence[int], ratios: Sequence[float]) -> Strategy:
    return Strategy(StageScheduler(boundaries, ratios), ReplayScorer(selection), TopKDrop(), name="replay")


class LogitTap:
    """Captures raw ``lm_head`` outputs (generate's ``output_logits`` would cast them to float32)."""

    def __init__(self, model):
        self.outputs: list[Tensor] = []
        self.handle = model.lm_head.register_forward_hook(lambda m, a, out: self.outputs.append(out.detach()))

    def close(self) -> list[Tensor]:
        self.handle.remove()
        return self.outputs


def at_positions(logits: Tensor, kept: tuple[Tensor, Tensor] | None, positions: Tensor) -> Tensor:
    """``(B, V)`` logits of the slot holding original position ``positions[b]`` of every row."""
    if kept is None:
        return logits[torch.arange(logits.shape[0]), positions]
    idx, valid = kept
    slot = ((idx == positions[:, None]) & valid).int().argmax(1)
    return logits[torch.arange(logits.shape[0]), slot]


def last_positions(attention_mask: Tensor) -> Tensor:
    """Original position of each row's last real token."""
    ar = torch.arange(attention_mask.shape[1])
    return torch.where(attention_mask.bool(), ar, -1).max(1).values
