"""Budgets: one spec for every strategy, solved into each strategy's own parameters.

Papers compare methods "at 192 / 128 / 64 tokens" on LLaVA-1.5-7B (576 visual tokens, 32 layers):
the *average number of visual tokens per decoder layer*. A strategy is a one-parameter family of
schedules (PyramidDrop: λ; FastV: the kept share after layer K; ...); the solver finds the parameter
whose schedule, on a reference model, averages the budget. The result is a ratio, so the same solved
strategy then runs on any model. The reference is LLaVA-1.5-7B unless ``reference`` names another
preset or a local model (its directory or ``config.json``): with the model's own path the budget
holds on that model's depth, which matters for shallow models (on 6 layers, PyramidDrop's λ solved
for 32 layers runs a different share of the FLOPs).

Two budget forms:

* ``budget`` — average retained visual tokens per layer on the reference model (e.g. 192);
* ``budget_flops`` — the share of the dense visual-token prefill FLOPs kept, in the paper
  convention of `tokenprune.cost.stack_flops` (``4nd² + 2n²d + 3ndm`` per layer).

Counts are continuous here (no ``int()`` truncation), as in the literature's λ tables: for
PyramidDrop with drops after layers 2, 8, 16, 24 this reproduces the community's λ = 0.581 / 0.437 /
0.196 for 192 / 128 / 64 tokens (research note pyramiddrop.md §6).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from .cost import ModelDims, stack_flops

__all__ = [
    "REFERENCE",
    "Budget",
    "BudgetError",
    "average_tokens",
    "flops_share",
    "solve",
    "budget_field",
    "budget_flops_field",
    "reference_field",
]

REFERENCE = "llava-1.5-7b"
"""The reference model budgets are stated for (576 visual tokens, 32 layers, d=4096, m=11008)."""

Family = Callable[[float], tuple[Sequence[int], Sequence[float]]]
"""A strategy's schedules as a function of its free parameter: ``p -> (layers, cumulative ratios)``,
with layers absolute on the reference depth; retained tokens must not decrease as ``p`` grows."""


class BudgetError(ValueError):
    """A budget that the strategy cannot reach (the message says the reachable range)."""


def budget_field() -> Any:
    """The ``budget`` option every budget-aware config declares: average visual tokens per layer."""
    return Field(
        None,
        gt=0.0,
        description="Average retained visual tokens per layer on the reference model (e.g. 192, 128, 64 for "
        "LLaVA-1.5-7B); solved into the strategy's own parameters.",
    )


def budget_flops_field() -> Any:
    """The ``budget_flops`` option: the share of the dense visual-token FLOPs to keep."""
    return Field(
        None,
        gt=0.0,
        le=1.0,
        description="Share of the dense visual-token prefill FLOPs kept (paper convention) on the reference model; "
        "solved into the strategy's own parameters.",
    )


def reference_field() -> Any:
    """The ``reference`` option: the model a budget is stated for (a preset, or a local model path).

    A local path (a model directory or its ``config.json``) makes the solve depth-aware: the budget
    then holds on that model itself, not on LLaVA-1.5-7B's 32 layers.
    """
    return Field(
        REFERENCE,
        description="Model the budget is stated for: a cost-model preset (tokenprune.cost.PRESETS) or a local "
        "model directory / config.json, whose own depth and widths the budget is then solved on.",
    )


def average_tokens(layers: Sequence[int], ratios: Sequence[float], num_layers: int, num_visual: float) -> float:
    """Mean visual tokens per layer when layer ``i`` keeps ``num_visual * ratios[s]`` from ``layers[s]`` on."""
    return sum(_per_layer(layers, ratios, num_layers, num_visual)) / num_layers


def flops_share(layers: Sequence[int], ratios: Sequence[float], dims: ModelDims, num_visual: float) -> float:
    """Paper-convention visual-token FLOPs of the schedule as a share of the dense stack."""
    d, m, n = dims.hidden_size, dims.intermediate_size, dims.num_layers
    return stack_flops(_per_layer(layers, ratios, n, num_visual), d, m) / stack_flops([num_visual] * n, d, m)


def _per_layer(layers: Sequence[int], ratios: Sequence[float], num_layers: int, num_visual: float) -> list[float]:
    out, current = [], 1.0
    for i in range(num_layers):
        for layer, ratio in zip(layers, ratios):
            if layer == i:
                current = ratio
        out.append(num_visual * current)
    return out


@dataclass(frozen=True)
class Budget:
    """A budget: ``tokens`` (average per layer) or ``flops`` (kept share), on a ``reference`` preset."""

    tokens: float | None = None
    flops: float | None = None
    reference: str = REFERENCE

    @classmethod
    def from_config(cls, config: Any) -> Budget | None:
        """The budget a config asks for (its ``budget`` / ``budget_flops`` fields), or ``None``."""
        tokens, flops = getattr(config, "budget", None), getattr(config, "budget_flops", None)
        if tokens is None and flops is None:
            return None
        if tokens is not None and flops is not None:
            raise BudgetError("Give either budget (tokens per layer) or budget_flops (FLOPs share), not both.")
        return cls(tokens, flops, getattr(config, "reference", REFERENCE))

    @property
    def dims(self) -> ModelDims:
        """Dimensions of the reference: a preset, or a local model's config (a clear error otherwise)."""
        dims = _reference_dims(self.reference)
        if not dims.visual_tokens:
            raise BudgetError(
                f"Reference {self.reference!r} has no default visual-token count (its config has no "
                "image_seq_length); use a preset or a model whose config states it."
            )
        return dims

    def measure(self, layers: Sequence[int], ratios: Sequence[float]) -> float:
        """The schedule's value in this budget's unit (tokens per layer, or FLOPs share)."""
        dims = self.dims
        if self.tokens is not None:
            return average_tokens(layers, ratios, dims.num_layers, dims.visual_tokens)  # type: ignore[arg-type]
        return flops_share(layers, ratios, dims, dims.visual_tokens)  # type: ignore[arg-type]

    @property
    def target(self) -> float:
        """The number the solver aims at: average tokens, or the kept FLOPs share."""
        return float(self.tokens if self.tokens is not None else self.flops)  # type: ignore[arg-type]

    def describe(self) -> str:
        """The budget in words, for error messages."""
        unit = "visual tokens per layer" if self.tokens is not None else "of the dense FLOPs"
        return f"{self.target:g} {unit} on {self.reference}"


@functools.lru_cache(maxsize=32)
def _reference_dims(reference: str) -> ModelDims:
    # cached: the solver measures a schedule a few hundred times, and a path reference reads a file
    try:
        return ModelDims.load(reference)
    except ValueError as exc:
        raise BudgetError(f"Budget reference: {exc}") from None


def solve(family: Family, budget: Budget, lo: float = 0.0, hi: float = 1.0, what: str = "parameter") -> float:
    """The parameter ``p`` in ``[lo, hi]`` whose schedule meets ``budget`` exactly (bisection).

    Raises:
        BudgetError: the budget is below what ``p = lo`` keeps or above what ``p = hi`` keeps; the
            message gives the reachable range.
    """
    low, high = budget.measure(*family(lo)), budget.measure(*family(hi))
    if not low - 1e-9 <= budget.target <= high + 1e-9:
        raise BudgetError(
            f"Budget {budget.describe()} is out of reach for this schedule: its {what} spans "
            f"{low:.4g} to {high:.4g} over [{lo:g}, {hi:g}]. "
            "Move the reduction layers (an earlier first layer reaches smaller budgets) or change the budget."
        )
    # A budget at the top of the range is "keep everything" exactly: bisection would stop a hair
    # below it, and a keep share of 1 - 1e-14 floors to one token fewer than all of them.
    if abs(budget.target - high) <= 1e-12 * max(1.0, abs(high)):
        return hi
    for _ in range(200):
        mid = (lo + hi) / 2
        if budget.measure(*family(mid)) < budget.target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13:
            break
    return (lo + hi) / 2
