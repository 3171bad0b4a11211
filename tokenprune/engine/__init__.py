"""The hook runtime that removes tokens from a decoder stack (see `tokenprune.engine.runtime`)."""

from .runtime import Engine
from .state import CallStats

__all__ = ["Engine", "CallStats"]
