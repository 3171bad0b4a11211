"""The host-side plan of one forward: every count and width the layer hooks need, derived once.

On a GPU, each device->host read (``.item()``, ``.tolist()``, ``int(t)``, ``bool(t)``) drains the
launch queue: the host waits for every queued kernel, then the GPU idles while the host queues the
next ones. Inside per-layer hooks that cost is paid at every boundary, and at every decode step.

So the VLM pre-hook reads the token layout once, before any decoder kernel is queued (one copy of
the visual/valid masks and the query positions), and derives from it and the schedule, for every
reduction boundary: how many tokens each sample keeps, the batch width after the boundary, whether
any slot is a filler, and whether the boundary removes anything at all. Which tokens are kept is
decided on the device by the scorer; how many is known here, because reducers that declare
``exact_count`` keep exactly the planned number (top-k does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

__all__ = ["HostLayout", "BoundaryPlan", "read_layout", "plan_boundary", "counted"]


@dataclass(frozen=True)
class HostLayout:
    """The token layout of one prefill, on the host.

    Attributes:
        num_visual: visual tokens per sample (padding excluded).
        num_text: real non-visual tokens per sample (text the engine never drops).
        visual_queries: per sample, how many distinct query positions are visual tokens (kept always).
        padded: whether any slot of the input is padding.
        visual_span: ``(start, stop)`` when every row's visual tokens are exactly the slots
            ``start..stop-1`` (one run, the same in every row) and no slot is padding or a visual
            query: the engine's ranked fast path (`engine.selection.select_span`); else ``None``.
    """

    num_visual: tuple[int, ...]
    num_text: tuple[int, ...]
    visual_queries: tuple[int, ...]
    padded: bool
    visual_span: tuple[int, int] | None = None


@dataclass(frozen=True)
class BoundaryPlan:
    """What one reduction boundary does, known before the layer runs.

    Attributes:
        target: visual tokens each sample keeps from this boundary on (the schedule's count).
        n_keep: removable candidates each sample keeps (``target`` minus its visual queries, >= 0).
        removes: False when no sample loses a token here (the boundary is skipped).
        visual: visual tokens each sample holds after the boundary.
        kept: real slots each sample holds after the boundary (text + kept visual).
        width: slots per row after the boundary (the longest row; shorter rows get filler slots).
        all_valid: no filler slot after the boundary (every row keeps ``width`` real tokens).
    """

    target: tuple[int, ...]
    n_keep: tuple[int, ...]
    removes: bool
    visual: tuple[int, ...]
    kept: tuple[int, ...]
    width: int
    all_valid: bool


def read_layout(visual: Tensor, valid: Tensor, query: Tensor) -> HostLayout:
    """Count the layout on the device and copy the counts to the host once (one device->host read).

    Args:
        visual: ``(B, L)`` visual tokens (padding already excluded).
        valid: ``(B, L)`` real tokens.
        query: ``(B, Q)`` original positions of the query tokens (repeats allowed).
    """
    query = query.to(visual.device).long()
    is_visual = visual.gather(1, query)
    if query.shape[1] > 1:  # training: a query position may repeat; count each distinct one once
        query, order = query.sort(dim=1)
        is_visual = is_visual.gather(1, order)
        is_visual[:, 1:] &= query[:, 1:] != query[:, :-1]
    ones = visual.int()
    first, last = ones.argmax(1), ones.cumsum(1).argmax(1)  # first and last visual slot of each row
    counts = torch.stack([visual.sum(1), (valid & ~visual).sum(1), is_visual.sum(1), (~valid).sum(1), first, last], dim=1)
    rows = counts.tolist()
    if not rows:
        return HostLayout((), (), (), False)
    num_visual, num_text, visual_queries, padding, firsts, lasts = (tuple(c) for c in zip(*rows))
    span = None
    n, start = num_visual[0], firsts[0]
    if n and not any(padding) and not any(visual_queries) and all(
        v == n and f == start and e == start + n - 1 for v, f, e in zip(num_visual, firsts, lasts)
    ):
        span = (start, start + n)  # one run of visual slots per row, the same in every row
    return HostLayout(num_visual, num_text, visual_queries, any(padding), span)


def plan_boundary(layout: HostLayout, visual_before: Sequence[int], target: Sequence[int]) -> BoundaryPlan:
    """Counts after a boundary that keeps ``target[b]`` visual tokens of the ``visual_before[b]`` present.

    Mirrors the engine's rule: text and visual queries are always kept; of the other visual tokens
    (the candidates) a sample keeps ``max(target - visual queries, 0)``, at most all of them.
    """
    target = tuple(int(t) for t in target)
    n_keep = tuple(max(t - vq, 0) for t, vq in zip(target, layout.visual_queries))
    candidates = [n - vq for n, vq in zip(visual_before, layout.visual_queries)]
    visual = tuple(vq + min(k, c) for vq, k, c in zip(layout.visual_queries, n_keep, candidates))
    kept = tuple(t + v for t, v in zip(layout.num_text, visual))
    removes = any(n > t for n, t in zip(visual_before, target))
    width = max(kept) if kept else 0
    return BoundaryPlan(target, n_keep, removes, visual, kept, width, all(k == width for k in kept))


def counted(keep: Tensor, visual: Tensor, planned: BoundaryPlan) -> BoundaryPlan:
    """``planned`` with the counts a reducer that decides its own numbers actually kept (one host read)."""
    counts = torch.stack([keep.sum(1), (keep & visual).sum(1)]).cpu()
    kept, vis = tuple(counts[0].tolist()), tuple(counts[1].tolist())
    width = max(kept) if kept else 0
    return replace(planned, visual=vis, kept=kept, width=width, all_valid=all(k == width for k in kept))
