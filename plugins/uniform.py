"""Uniform-stride baseline: keep evenly spaced visual tokens, once, after a layer.

Kept tokens are ``round(linspace(0, N - 1, k))`` of each sample's ``N`` visual tokens in sequence
(row-major) order, as vtbench's ``identity`` compressor; no scores are computed.
"""

from __future__ import annotations

from ..components import ConstantScorer, StrideDrop
from ..components.single_stage import SingleStageConfig
from ..hookspecs import RegisterStrategy, hookimpl
from ..interfaces import Strategy

__all__ = ["UniformConfig", "build"]


class UniformConfig(SingleStageConfig):
    """One reduction after ``layer`` keeping an even stride of ``keep`` share (or a budget)."""


def build(config: UniformConfig) -> Strategy:
    """One reduction keeping an even stride of the visual tokens (a baseline)."""
    return Strategy(config.scheduler(), ConstantScorer(), StrideDrop(), name="uniform", config=config)


@hookimpl
def tokenprune_register_strategies(register: RegisterStrategy) -> None:
    register(
        "uniform",
        UniformConfig,
        build,
        aliases=("stride",),
        description="Baseline: keep an even stride of the visual tokens, once, after a layer.",
    )
