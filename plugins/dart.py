"""DART: keep pivot tokens and the tokens least duplicated with them, once, after layer K.

Wen et al., "Stop Looking for Important Tokens in Multimodal Language Models: Duplication Matters
More", arXiv:2502.11494 (EMNLP 2025). Reference code: github.com/ZichenWen1/DART.

Pivots: the visual tokens and the text tokens after the image with the largest L1 norm of their
layer-(K-1) attention keys (post-RoPE, all heads); the rest of the budget goes, pivot by pivot, to the
candidates with the lowest cosine similarity to the pivot. No attention map is needed.

Differences from the reference code (see docs/strategies/dart.md):

* Exactly ``int(N * keep)`` visual tokens stay (image pivots included); the reference keeps the 4
  image pivots on top of its budget.
* Similarity uses the hidden states entering layer K without the final RMSNorm's per-channel weight.
* Pivot order is by descending key norm (the reference iterates a Python set).
* Batches: per-sample selection; the reference asserts batch size 1.
"""

from __future__ import annotations

from pydantic import Field

from ..components import KeyNormScorer, PivotDedupDrop
from ..components.single_stage import SingleStageConfig
from ..hookspecs import RegisterStrategy, hookimpl
from ..interfaces import Strategy

__all__ = ["DARTConfig", "build"]


class DARTConfig(SingleStageConfig):
    """DART options: the reduction layer (K = 2), the kept share or budget, and the pivot counts."""

    image_pivots: int = Field(4, ge=1, description="Visual pivot tokens per sample (kept).")
    text_pivots: int = Field(4, ge=0, description="Text pivot tokens per sample (from the text after the image).")


def build(config: DARTConfig) -> Strategy:
    """DART: pivots by key norm at layer K-1, then the tokens least similar to them, top-k drop."""
    return Strategy(
        config.scheduler(),
        KeyNormScorer(layer="previous"),
        PivotDedupDrop(config.image_pivots, config.text_pivots),
        name="dart",
        config=config,
    )


@hookimpl
def tokenprune_register_strategies(register: RegisterStrategy) -> None:
    register(
        "dart",
        DARTConfig,
        build,
        description="Keep pivot tokens and the tokens least similar to them, once, after layer K (arXiv:2502.11494).",
    )
