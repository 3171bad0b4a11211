"""Base class of every strategy configuration.

Configurations are pydantic models: frozen (a wrapped model's config cannot drift under it),
``extra="forbid"`` (a misspelled option is an error naming the valid ones, not a silent default),
and JSON-serialisable (they are recorded next to benchmark results).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["StrategyConfig"]


class StrategyConfig(BaseModel):
    """Base for strategy configs registered through `tokenprune_register_strategies`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
