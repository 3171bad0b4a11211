"""The one selection step every reduction site runs: score, choose, gather.

Tokens are reduced at five sites: a decoder layer of the LLM (`engine.runtime`), a vision-encoder
block (`encoder.engine`), the feature layer the projector reads and the projector's output
(`encoder.vlm`), and each image of a packed tower after its patch merger (`encoder.packed`); a
serving engine calls the same step through `tokenprune.projector_selection`. All of them do the same:
the scorer ranks the context's slots, the reducer chooses which candidates stay, the protected slots
(text, queries, class tokens) are added back, and the kept rows of the features — the reducer's merged
features where it merged — are gathered in their original order. Doing it here once keeps the sites
from drifting apart (the same tokens are kept whichever path runs) and keeps the rules in one place:

* scores are computed without gradient (selection is discrete);
* a reducer that declares `Reducer.exact_count` keeps exactly the planned number, so the caller
  can pass the batch width and expected count from the host and nothing is read back from the
  device; otherwise the kept counts are read once and checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ScheduleError
from ..interfaces import Reducer, Reduction, ScoreContext, Scorer
from .layout import select_slots
from .masks import gather_rows

__all__ = ["Selected", "choose", "score", "select", "select_span"]


@dataclass(frozen=True)
class Selected:
    """What one selection kept.

    Attributes:
        keep: ``(B, n)`` slots kept (chosen candidates and protected slots); ``None`` from `select_span`'s
            ranked path, whose counts are exact (nothing reads it back).
        index: ``(B, m)`` kept slot indices, ascending per row (original order kept).
        valid: ``(B, m)`` False for filler slots (rows that keep fewer than ``m``).
        features: ``(B, m, d)`` the kept rows of the features (the reducer's merged ones if it merged).
        reduction: the reducer's decision (merge sizes, proportional attention); ``None`` from
            `select_span`'s ranked path (it neither merges nor resizes).
    """

    keep: Tensor | None
    index: Tensor
    valid: Tensor
    features: Tensor
    reduction: Reduction | None


def select(
    ctx: ScoreContext,
    scorer: Scorer,
    reducer: Reducer,
    candidates: Tensor,
    n_keep: Tensor,
    *,
    protected: Tensor,
    width: int | None = None,
    full: bool = False,
    expect: int | None = None,
    miscount: Callable[[list[int]], str] | None = None,
) -> Selected:
    """Score ``ctx``, let ``reducer`` keep ``n_keep[b]`` of ``candidates[b]``, add ``protected``, gather.

    Args:
        ctx: the site's score context (``hidden`` holds the features to gather).
        scorer: the strategy's scorer for this site.
        reducer: the strategy's reducer for this site.
        candidates: ``(B, n)`` slots the reducer may remove.
        n_keep: ``(B,)`` candidates each row keeps.
        protected: ``(B, n)`` slots kept whatever the reducer says.
        width: slots per row after the selection, when the caller knows it on the host (the LLM plan).
        full: with ``width``, the host knows every row keeps exactly ``width`` real slots (no fillers).
        expect: the number of slots every row must keep (a rectangular site: encoders, projectors).
        miscount: the error message for rows that kept another number (given the per-row counts);
            with ``expect=None`` and a message, rows only have to agree with each other.

    Raises:
        ScheduleError: a row kept another number of slots than the site allows.
    """
    return choose(ctx, score(ctx, scorer), reducer, candidates, n_keep, protected=protected, width=width, full=full,
                  expect=expect, miscount=miscount)  # fmt: skip


def score(ctx: ScoreContext, scorer: Scorer) -> Tensor:
    """The scorer's ``(B, n)`` scores, without gradient (selection is discrete)."""
    if torch.is_grad_enabled():
        with torch.no_grad():
            return scorer.score(ctx)
    return scorer.score(ctx)  # inference: entering a no_grad context costs more than some of the scoring kernels


def choose(
    ctx: ScoreContext,
    scores: Tensor,
    reducer: Reducer,
    candidates: Tensor,
    n_keep: Tensor,
    *,
    protected: Tensor,
    width: int | None = None,
    full: bool = False,
    expect: int | None = None,
    miscount: Callable[[list[int]], str] | None = None,
) -> Selected:
    """`select` after scoring: the reducer's choice, the protected slots, the gather (arguments as `select`)."""
    device = candidates.device
    reduction = reducer.reduce(ctx, scores, candidates, n_keep)
    keep = protected.to(device) | (reduction.keep.to(device) & candidates)
    if miscount is not None and not (reducer.exact_count and expect is not None):
        counts = keep.sum(1).tolist()  # a reducer that decides its own counts: check them once
        if any(c != (counts[0] if expect is None else expect) for c in counts):
            raise ScheduleError(miscount(counts))
        width = counts[0] if counts else 0
    elif expect is not None:
        width = expect
    # Every row keeps exactly `width` slots: a planned exact count without fillers, or a rectangular
    # site whose counts are exact or were just checked.
    full = width is not None and (
        (full and reducer.exact_count) or (expect is not None and (reducer.exact_count or miscount is not None))
    )
    index, valid = select_slots(keep, ctx.valid.to(device), width, full=full)
    source = reduction.hidden if reduction.hidden is not None else ctx.hidden
    return Selected(keep, index, valid, gather_rows(source, index), reduction)


def select_span(
    ctx: ScoreContext, scorer: Scorer, reducer: Reducer, n_keep: Tensor, span: tuple[int, int], k: int
) -> Selected:
    """`select` for a layout the host knows: in every row the candidates are exactly the visual slots
    ``span = (start, stop)``, every other slot is real (protected), and every row keeps ``k`` of them.

    The reducer is asked for the kept columns of the span (`Reducer.keep_columns`), and the next
    stage's slots are the prefix, the chosen columns and the suffix, already ascending: the same
    slots, features and validity `select` gives, with a third of its operations. A reducer without
    the fast path gets `choose` with the same scores (``n_keep``: ``(B,)``, all ``k``).
    """
    start, stop = span
    scores = score(ctx, scorer)
    columns = reducer.keep_columns(ctx, scores[:, start:stop], k)
    batch, n = ctx.valid.shape
    if columns is None:
        return choose(ctx, scores, reducer, ctx.visual, n_keep, protected=ctx.valid & ~ctx.visual,
                      width=n - (stop - start) + k, full=reducer.exact_count)  # fmt: skip
    slots = torch.arange(n, device=columns.device)
    index = torch.cat([slots[:start].expand(batch, -1), columns + start, slots[stop:].expand(batch, -1)], dim=1)
    valid = torch.ones(index.shape, dtype=torch.bool, device=index.device)
    return Selected(None, index, valid, gather_rows(ctx.hidden, index), None)
