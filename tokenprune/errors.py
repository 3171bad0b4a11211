"""Exceptions raised by tokenprune.

Every error names the problem and the fix, so that the message is the documentation a user needs
at the moment something goes wrong.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "TokenpruneError",
    "UnknownStrategyError",
    "UnsupportedModelError",
    "AlreadyWrappedError",
    "NotWrappedError",
    "ScheduleError",
    "UnsupportedFeatureError",
    "RegistrationError",
    "IncompatibleComponentsError",
    "UnknownComponentError",
]


class TokenpruneError(Exception):
    """Base class of every error raised by tokenprune."""


class UnknownStrategyError(TokenpruneError, KeyError):
    """A strategy name that no installed plugin registered."""

    def __init__(self, name: str, known: Iterable[str], failed: dict[str, str] | None = None):
        known = sorted(known)
        hint = difflib.get_close_matches(name, known, n=1)
        suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
        broken = "".join(f" Plugin {p!r} failed to import ({err})." for p, err in (failed or {}).items())
        super().__init__(
            f"Unknown strategy {name!r}.{suggestion} Known strategies: {', '.join(known) or '(none)'}.{broken} "
            "Run `tokenprune list` to see where each comes from."
        )
        self.name = name
        self.known = known

    def __str__(self) -> str:  # KeyError would otherwise print the message with quotes
        return str(self.args[0])


class UnsupportedModelError(TokenpruneError, TypeError):
    """No registered adapter knows how to reach the decoder stack of this model."""

    def __init__(self, model: object, supported: Iterable[str], hint: str = ""):
        kind = getattr(getattr(model, "config", None), "model_type", None)
        what = f"{type(model).__name__} (model_type={kind!r})" if kind else type(model).__name__
        hint = hint or (
            "Wrap the full *ForConditionalGeneration model, or register an adapter for this family "
            "(see docs: 'Add an adapter')."
        )
        super().__init__(
            f"No tokenprune adapter supports {what}. Supported model types: "
            f"{', '.join(sorted(supported)) or '(none)'}. {hint}"
        )


class AlreadyWrappedError(TokenpruneError, RuntimeError):
    """`wrap` was called on a model that is already wrapped."""


class NotWrappedError(TokenpruneError, RuntimeError):
    """`unwrap` or a handle lookup on a model that is not wrapped."""


class ScheduleError(TokenpruneError, ValueError):
    """A schedule violates one of its constraints (the message names which)."""


class UnsupportedFeatureError(TokenpruneError, NotImplementedError):
    """A model feature the engine does not handle yet (flex attention, static cache, ...)."""


class RegistrationError(TokenpruneError, ValueError):
    """A plugin registered an invalid or duplicate name."""


class IncompatibleComponentsError(TokenpruneError, ValueError):
    """A scheduler, scorer and reducer that cannot work together (e.g. different sites)."""


class UnknownComponentError(TokenpruneError, KeyError):
    """A scheduler, scorer or reducer name that no installed plugin registered."""

    def __str__(self) -> str:
        return str(self.args[0])
