"""PyramidDrop: drop a share of the visual tokens at the end of each stage of the LLM.

Xing et al., "PyramidDrop: Accelerating Your Large Vision-Language Models via Pyramid Visual
Redundancy Reduction", arXiv:2410.17247 (CVPR 2025 as "Conical Visual Concentration").
Reference code: github.com/Cooperx521/PyramidDrop (MIT).

The LLM is split into stages; at each boundary the visual tokens are ranked by the attention the
last instruction token pays them, and only ``int(N * ratio)`` of the sample's original ``N`` stay.

Differences from the reference code (all deliberate; see docs/strategies/pyramiddrop.md):

* Kept tokens keep their original rotary positions by default (``positions="keep"``); the
  reference renumbers them (``positions="compact"`` reproduces that).
* Scores are computed with the first layer of the next stage, as the reference code does, with
  grouped-query attention supported (the reference assumes multi-head attention). ``rank_layer="last"``
  ranks with the last layer of the ending stage instead, as the paper's text describes, reading the
  keys that layer cached (no recomputation over every token).
* Batches of any padding side and mixed image counts; the reference needs right padding and
  batch size 1 at inference.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..budget import budget_field, budget_flops_field, reference_field
from ..components import (
    ConstantScorer,
    PerStageReducer,
    QueryAttentionScorer,
    StrideDrop,
    TextAttentionScorer,
    TopKDrop,
)
from ..components.pyramid_schedule import PyramidScheduleConfig, build_scheduler
from ..hookspecs import RegisterStrategy, hookimpl
from ..interfaces import Strategy

# The stage schedule (`PyramidScheduleConfig`, `build_scheduler`) lives in
# `tokenprune.components.pyramid_schedule`: the "pyramid" scheduler component shares it.
__all__ = ["PyramidDropConfig", "build"]


class PyramidDropConfig(PyramidScheduleConfig):
    """PyramidDrop options: the schedule (official names, or λ and S, or a budget), positions and scoring.

    With nothing set: S = 4 equal stages and λ = 0.5, i.e. ``[8, 16, 24]`` and
    ``[0.5, 0.25, 0.125]`` on a 32-layer LLM. ``budget=192`` with ``layer_list=[2, 8, 16, 24]``
    solves λ = 0.581 (the community's value for "192 tokens" on LLaVA-1.5-7B).
    """

    positions: Literal["keep", "compact"] = Field(
        "keep", description="'keep' original rotary positions, or 'compact' renumbering like the reference code."
    )
    budget: float | None = budget_field()
    budget_flops: float | None = budget_flops_field()
    reference: str = reference_field()
    scoring: Literal["attention", "uniform_then_attention", "uniform"] = Field(
        "attention",
        description="'attention' (the paper); 'uniform_then_attention' keeps an even stride at the first "
        "boundary and ranks by attention after (VideoChat-Flash's uniform0_attention); 'uniform' strides everywhere.",
    )
    rank_layer: Literal["next", "last"] = Field(
        "next",
        description="Whose query and keys rank the tokens at a boundary: 'next', the first layer of the next stage, "
        "recomputed over every token (the official code); or 'last', the last layer of the ending stage, whose "
        "keys its own forward cached (the paper's text, Sec. 3.2: no recomputation over every token).",
    )
    query: Literal["last", "instruction"] = Field(
        "last",
        description="Who rates the visual tokens: 'last' instruction token (the paper; in training the token before "
        "each answer span), or the whole 'instruction' after the image, averaged (multi-query scoring).",
    )


def build(config: PyramidDropConfig) -> Strategy:
    """Stage scheduler + last-instruction-token attention + top-k drop (or the uniform variants)."""
    layer = "current" if config.rank_layer == "next" else "previous"  # the engine's names for the two layers
    attention = TextAttentionScorer(layer) if config.query == "instruction" else QueryAttentionScorer(layer)
    if config.scoring == "uniform":
        scorer, reducer = ConstantScorer(), StrideDrop()
    elif config.scoring == "uniform_then_attention":
        scorer, reducer = attention, PerStageReducer([StrideDrop(), TopKDrop()])
    else:
        scorer, reducer = attention, TopKDrop()
    return Strategy(
        scheduler=build_scheduler(config),
        scorer=scorer,
        reducer=reducer,
        positions=config.positions,
        name="pyramiddrop",
        config=config,
    )


@hookimpl
def tokenprune_register_strategies(register: RegisterStrategy) -> None:
    register(
        "pyramiddrop",
        PyramidDropConfig,
        build,
        aliases=("pdrop",),
        description="Rank visual tokens by the instruction's attention and drop a share at each stage (arXiv:2410.17247).",
    )
