"""What every hook-installing engine shares: its hook handles and its per-thread call state.

The LLM engine, the vision-encoder engine and the VLM's vision bridge each attach forward hooks and
keep the state of the call in flight per thread (so one wrapped model can serve several threads).
A copy of a wrapped model (``copy.deepcopy``, ``pickle``) carries the engine's configuration but
starts idle: thread-local state is neither copyable nor meaningful in another process.
"""

from __future__ import annotations

import threading
from typing import Any

from torch.utils.hooks import RemovableHandle

__all__ = ["HookOwner"]


class HookOwner:
    """Base of the engines: owns ``_handles`` (removable hooks) and ``_local`` (per-thread state)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._handles: list[RemovableHandle] = []

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_local", None)  # per-thread call state is not copied: a copy starts idle
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _detach_hooks(self) -> None:
        """Remove every attached hook and forget any call in flight (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._local = threading.local()
