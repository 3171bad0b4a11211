"""Base class of every strategy configuration.

Configurations are pydantic models: frozen (a wrapped model's config cannot drift under it),
``extra="forbid"`` (a misspelled option is an error naming the valid ones, not a silent default),
and JSON-serialisable (they are recorded next to benchmark results).
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["StrategyConfig"]


class StrategyConfig(BaseModel):
    """Base for strategy configs registered through `tokenprune_register_strategies`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_options(cls, data: Any) -> Any:
        """Name the valid options (and the closest one) for a misspelled option."""
        if isinstance(data, dict):
            valid = list(cls.model_fields)
            unknown = [key for key in data if key not in valid]
            if unknown:
                hints = [difflib.get_close_matches(str(key), valid, n=1) for key in unknown]
                hint = "".join(f" Did you mean {h[0]!r} for {k!r}?" for k, h in zip(unknown, hints) if h)
                raise ValueError(
                    f"Unknown option(s) {', '.join(map(repr, unknown))} for {cls.__name__}.{hint} "
                    f"Valid options: {', '.join(valid)}."
                )
        return data
