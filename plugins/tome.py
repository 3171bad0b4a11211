"""ToMe: bipartite soft matching between the blocks of a vision encoder.

Bolya et al., "Token Merging: Your ViT but Faster", ICLR 2023, arXiv:2210.09461. Written from the
paper (the reference code's licence is non-commercial; nothing is copied from it).

``r`` tokens merge before every block from ``start`` on (at most half of what is left per block), or
``ratio`` states the budget (share of the patch tokens left) and ``r`` is solved for the encoder's depth;
merged tokens are size-weighted means, and with ``proportional_attention`` every later block adds
``log(size)`` to its attention logits.

Differences from the paper: merging happens between blocks (a pre-hook on each block, with the
similarity taken from that block's own keys), not between the attention and the MLP of one block;
and surviving tokens keep their original order (the reference concatenates the two sets).
For vision encoders only (timm, open_clip, transformers CLIP/SigLIP towers).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from ..components import BipartiteMerge, ConstantRateScheduler, NullScorer
from ..config import StrategyConfig
from ..hookspecs import RegisterStrategy, hookimpl
from ..interfaces import Strategy

__all__ = ["ToMeConfig", "build"]


class ToMeConfig(StrategyConfig):
    """ToMe options."""

    r: int | None = Field(None, ge=0, description="Tokens merged before every block (capped at half of what is left).")
    ratio: float | None = Field(
        None, gt=0.0, le=1.0, description="Instead of r: share of the patch tokens left after the last block (solves r)."
    )
    start: int = Field(1, ge=1, description="First block that sees fewer tokens.")
    proportional_attention: bool = Field(
        True, description="Add log(size) to later attention logits (the paper: on for supervised ViTs, off for MAE)."
    )


    @model_validator(mode="after")
    def _one_rate(self) -> ToMeConfig:
        """Exactly one of ``r`` and ``ratio``."""
        if (self.r is None) == (self.ratio is None):
            raise ValueError("Give exactly one of r (tokens merged per block) or ratio (share of tokens kept).")
        return self


def build(config: ToMeConfig) -> Strategy:
    """Constant-rate schedule + bipartite soft matching."""
    return Strategy(
        scheduler=ConstantRateScheduler(config.r, config.start, ratio=config.ratio),
        scorer=NullScorer(),
        reducer=BipartiteMerge(config.proportional_attention),
        name="tome",
        config=config,
    )


@hookimpl
def tokenprune_register_strategies(register: RegisterStrategy) -> None:
    register(
        "tome",
        ToMeConfig,
        build,
        description="Merge r redundant tokens before every vision-encoder block by bipartite matching (arXiv:2210.09461).",
    )
