"""The tensor work of one LLM reduction boundary, in one function.

At a reduction layer the engine plans on the host (counts, widths: `engine.plan`) and then runs this
function, which does everything that touches the device: mark the query slots, split the slots into
candidates and protected ones, run the shared selection step (`engine.selection.select`: score,
choose, gather), and derive the next stage's slots (original positions, visual flags) and rotary
tables. Keeping all of it in one function makes it the unit `WrapHandle.compile_selection` compiles:
one graph with dynamic shapes for every reduction layer, batch and prompt length, instead of sixty
launches per boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..interfaces import Reducer, ScoreContext, Scorer
from .masks import gather_rows
from .selection import Selected, select, select_span

__all__ = ["Boundary", "reduce_boundary"]


@dataclass(frozen=True)
class Boundary:
    """What one boundary produced.

    Attributes:
        chosen: the selection (kept slots, their indices and validity, the gathered features).
        idx: ``(B, m)`` original positions of the next stage's slots.
        visual: ``(B, m)`` real visual tokens among them.
        rope: the next stage's ``(cos, sin)`` rows (``None`` when no tables were given).
    """

    chosen: Selected
    idx: Tensor
    visual: Tensor
    rope: tuple[Tensor, ...] | None


def reduce_boundary(
    ctx: ScoreContext,
    scorer: Scorer,
    reducer: Reducer,
    n_keep: Tensor,
    width: int | None,
    rope: tuple[Tensor, ...] | None,
    full: bool = False,
    visual_queries: bool = True,
    span: tuple[int, int] | None = None,
) -> Boundary:
    """Select the next stage's slots at one boundary (see the module docstring).

    Args:
        ctx: the boundary's score context (its ``query`` holds the query slots).
        scorer: the strategy's scorer.
        reducer: the strategy's reducer.
        n_keep: ``(B,)`` candidates each sample keeps (from the host plan).
        width: slots per row after the boundary when the plan knows it (an exact-count reducer), else ``None``.
        rope: the current stage's ``(cos, sin)`` rows; the next stage's are gathered from them (the
            same rows the full-length tables give at the kept positions).
        full: with ``width``, the plan says every row keeps exactly ``width`` real slots (no fillers).
        visual_queries: whether any query token is a visual token (host-known from the layout); when
            none is, every visual slot is a candidate and no query mask is built.
        span: ``(start, stop)`` when the host knows that in every row the visual slots are exactly
            these, no slot is padding or a query, and every row keeps ``width - (n - (stop - start))``
            of them: the selection then runs `select_span` (eager only; a compiled step would
            specialise on the ints).
    """
    if span is not None:
        k = width - (ctx.valid.shape[1] - (span[1] - span[0]))
        chosen = select_span(ctx, scorer, reducer, n_keep, span, k)
        idx = ctx.positions.gather(1, chosen.index)
        kept_rope = None if rope is None else tuple(gather_rows(t, chosen.index) for t in rope)
        return Boundary(chosen, idx, ctx.visual.gather(1, chosen.index), kept_rope)
    if visual_queries:  # a visual query token is never removed
        is_query = torch.zeros_like(ctx.valid).scatter(1, ctx.query, True)
        candidates = ctx.visual & ~is_query
    else:
        candidates = ctx.visual
    protected = ctx.valid & ~candidates  # text, and visual queries (visual slots are always real)
    chosen = select(ctx, scorer, reducer, candidates, n_keep, protected=protected, width=width, full=full)
    idx = ctx.positions.gather(1, chosen.index)
    visual = ctx.visual.gather(1, chosen.index)
    if not (full and reducer.exact_count):  # fillers (possible unless `select` took no filler) are not visual
        visual = visual & chosen.valid
    kept_rope = None if rope is None else tuple(gather_rows(t, chosen.index) for t in rope)
    return Boundary(chosen, idx, visual, kept_rope)
