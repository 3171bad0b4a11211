"""SparseVLM-style text-guided pruning: relevant text tokens rate the visual tokens, in three stages.

Zhang et al., "SparseVLM: Visual Token Sparsification for Efficient Vision-Language Model
Inference", arXiv:2410.04417 (ICML 2025). Reference code: github.com/Gumpest/SparseVLMs.

Raters are the text tokens after the image whose mean softmax relevance to the visual tokens exceeds
the mean; a visual token's score is the raters' mean attention to it (head-mean probabilities) at
the layer whose output is pruned. Stages default to the reference's pruning layers 2, 6 and 15
(0-based, pruning their *output*: ``layer_list=[3, 7, 16]`` in tokenprune's "after layer" numbers),
with the per-stage kept counts of the reference's published table for 576 visual tokens.

Differences from the reference (see docs/strategies/sparsevlm.md):

* No token recycling (v1/v1.5 merge part of the deleted tokens into cluster tokens); this is the
  v2.0 ("SparseVLM+") behaviour, whose count table is used. Nor v2.0's "attention gravity
  correction" and priority heads.
* Raters are chosen from the hidden states entering the reduction layer, not the LLM's input.
* Original rotary positions are kept (as v2.0; v1/v1.5 renumber).
* Per-sample selection in batches; the reference asserts batch size 1.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..budget import Budget, BudgetError, budget_field, budget_flops_field, reference_field, solve
from ..components import StageScheduler, TextRaterScorer, TopKDrop
from ..config import StrategyConfig
from ..hookspecs import RegisterStrategy, hookimpl
from ..interfaces import Strategy

__all__ = ["SparseVLMConfig", "build", "KEEP_TABLE", "TABLE_VISUAL"]

TABLE_VISUAL = 576
"""Visual tokens the KEEP_TABLE counts refer to (LLaVA-1.5's 576)."""
KEEP_TABLE: dict[int, tuple[int, int, int]] = {
    192: (300, 200, 118),
    128: (238, 108, 60),
    96: (246, 54, 28),
    64: (66, 34, 20),
}
"""SparseVLM+ (v2.0) visual tokens kept after each of the three stages, for 576 tokens, by budget."""


class SparseVLMConfig(StrategyConfig):
    """SparseVLM-style options: stage layers, and the kept counts from the table, explicit ratios or a budget."""

    layer_list: list[int] = Field(
        [3, 7, 16], description="1-based layers after which tokens drop (the reference's 0-based pruning layers 2, 6, 15)."
    )
    retained_tokens: Literal[192, 128, 96, 64] = Field(
        192, description="Row of the reference's count table (kept after each stage, for 576 tokens)."
    )
    keep_ratios: list[float] | None = Field(
        None, description="Cumulative share of the original visual tokens kept after each stage (overrides the table)."
    )
    budget: float | None = budget_field()
    budget_flops: float | None = budget_flops_field()
    reference: str = reference_field()

    @model_validator(mode="after")
    def _consistent(self) -> SparseVLMConfig:
        if any(b <= a for a, b in zip(self.layer_list, self.layer_list[1:])) or min(self.layer_list, default=1) < 1:
            raise ValueError(f"layer_list={self.layer_list} must be strictly increasing layers >= 1.")
        if self.keep_ratios is not None:
            if len(self.keep_ratios) != len(self.layer_list):
                raise ValueError(f"keep_ratios has {len(self.keep_ratios)} entries for {len(self.layer_list)} layers.")
            if Budget.from_config(self) is not None:
                raise ValueError("Give either keep_ratios or budget/budget_flops, not both.")
        elif len(self.layer_list) != 3:
            raise ValueError("The count table has three stages: give three layers, or keep_ratios of your own.")
        self.ratios()
        return self

    def table_ratios(self) -> list[float]:
        """Cumulative retention of the table row for ``retained_tokens`` (counts over 576)."""
        return [count / TABLE_VISUAL for count in KEEP_TABLE[self.retained_tokens]]

    def ratios(self) -> list[float]:
        """Cumulative kept shares: explicit, or the table row, scaled to meet the budget if one is given."""
        if self.keep_ratios is not None:
            return list(self.keep_ratios)
        base = self.table_ratios()
        budget = Budget.from_config(self)
        if budget is None:
            return base
        layers = list(self.layer_list)
        family = lambda c: (layers, [min(1.0, c * r) for r in base])  # noqa: E731
        try:
            scale = solve(family, budget, lo=0.0, hi=1.0 / min(base), what="scale")
        except BudgetError as exc:
            raise ValueError(str(exc)) from None
        return family(scale)[1]


def build(config: SparseVLMConfig) -> Strategy:
    """Three stages ranked by the relevant text tokens' attention (SparseVLM-style)."""
    return Strategy(
        StageScheduler(config.layer_list, config.ratios()),
        TextRaterScorer(layer="previous"),
        TopKDrop(),
        name="sparsevlm",
        config=config,
    )


@hookimpl
def tokenprune_register_strategies(register: RegisterStrategy) -> None:
    register(
        "sparsevlm",
        SparseVLMConfig,
        build,
        description="Text raters' attention ranks the visual tokens, in three stages (SparseVLM-style, arXiv:2410.04417).",
    )
