"""Wall-clock helpers shared by the benchmarks (`tokenprune.tools.bench`, `tokenprune.tools.bench_modes`).

CUDA kernels run asynchronously: a timestamp means something only after the device has finished
the work queued so far, so every clock here synchronises first.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["HookClock", "SpanClock", "StepStreamer", "sync"]


def sync(device: str) -> None:
    """Wait for the queued CUDA work on a CUDA ``device``; nothing on the CPU."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


class StepStreamer:
    """A ``generate`` streamer that timestamps each ``put``: the prompt, then every new token.

    ``times[0]`` is when ``generate`` handed over the prompt, ``times[1]`` the first new token (the
    end of the prefill), each later one a decode step.
    """

    def __init__(self, device: str):
        self.device = device
        self.times: list[float] = []

    def put(self, value: Any) -> None:
        """Record the time (after synchronising), ignoring the tokens."""
        sync(self.device)
        self.times.append(time.perf_counter())

    def end(self) -> None:
        """Nothing to flush."""

    @property
    def steps(self) -> list[float]:
        """Durations of the decode steps after the first new token."""
        return [b - a for a, b in zip(self.times[1:], self.times[2:])]


class SpanClock:
    """Wall time from a module's first pre-hook to its last forward hook (e.g. the language model alone).

    Registered with ``prepend=True`` for the pre-hook, so hooks already on the module (the engine's)
    fall inside the span; summed over calls in ``seconds``. `remove` detaches it.
    """

    def __init__(self, module: nn.Module, device: str):
        self.device = device
        self.seconds = 0.0
        self._start = 0.0
        self._handles = [
            module.register_forward_pre_hook(self._begin, prepend=True),
            module.register_forward_hook(self._end),
        ]

    def _begin(self, module: nn.Module, args: Any) -> None:
        sync(self.device)
        self._start = time.perf_counter()

    def _end(self, module: nn.Module, args: Any, output: Any) -> None:
        sync(self.device)
        self.seconds += time.perf_counter() - self._start

    def remove(self) -> None:
        """Detach both hooks."""
        for handle in self._handles:
            handle.remove()


class HookClock:
    """Accumulates the wall time between a first and a last hook on a set of modules.

    Registered after the engine's hooks: a pre-hook with ``prepend=True`` starts the clock and an
    appended pre-hook stops it, so the interval is exactly the time the hooks in between took
    (the engine's, plus any other hook already there). Forward (post) hooks are bracketed alike.
    """

    def __init__(self, groups: dict[str, Sequence[nn.Module]], device: str, post: Sequence[nn.Module] = ()):
        self.device = device
        self.seconds: dict[str, float] = {name: 0.0 for name in groups}
        self._handles: list[Any] = []
        self._start = 0.0
        for name, modules in groups.items():
            for module in modules:
                self._handles.append(module.register_forward_pre_hook(self._begin, prepend=True))
                self._handles.append(module.register_forward_pre_hook(self._ender(name)))
        for module in post:
            self.seconds.setdefault("post", 0.0)
            self._handles.append(module.register_forward_hook(self._begin_post, prepend=True))
            self._handles.append(module.register_forward_hook(self._ender_post("post")))

    def _begin(self, module: nn.Module, args: Any) -> None:
        sync(self.device)
        self._start = time.perf_counter()

    def _ender(self, name: str):
        def end(module: nn.Module, args: Any) -> None:
            sync(self.device)
            self.seconds[name] += time.perf_counter() - self._start

        return end

    def _begin_post(self, module: nn.Module, args: Any, output: Any) -> None:
        self._begin(module, args)

    def _ender_post(self, name: str):
        end = self._ender(name)

        def post(module: nn.Module, args: Any, output: Any) -> None:
            end(module, args)

        return post

    @property
    def total(self) -> float:
        """Seconds inside the bracketed hooks, all groups together."""
        return sum(self.seconds.values())

    def remove(self) -> None:
        """Detach the timing hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
