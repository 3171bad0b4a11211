"""Wall-clock helpers shared by the benchmarks (`tokenprune.tools.bench`, `tokenprune.tools.bench_modes`).

CUDA kernels run asynchronously: a timestamp means something only after the device has finished
the work queued so far, so every clock here synchronises first.
"""

from __future__ import annotations

import time
from typing import Any

import torch

__all__ = ["sync", "StepStreamer"]


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
