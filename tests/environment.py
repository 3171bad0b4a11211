"""Skips that name their fix, and that CI turns into failures.

A newcomer's test run may lack a system package (headless Chromium) or a separate environment
(vLLM's own venv); those tests skip with the command that provides it. ``.ci/run`` provides all of
them and exports ``TOKENPRUNE_CI=1``, so there a missing piece fails the run instead of skipping:
a CI that silently skipped a test would hide exactly the install step it exists to check.
"""

from __future__ import annotations

import os

import pytest

__all__ = ["IN_CI", "skip_or_fail"]

IN_CI = os.environ.get("TOKENPRUNE_CI") == "1"
"""True under ``.ci/run`` (which installs every optional system dependency the tests use)."""


def skip_or_fail(reason: str) -> None:
    """Skip with ``reason`` (which must say how to get what is missing); fail instead under CI."""
    if IN_CI:
        pytest.fail(f"{reason}\n(.ci/run sets TOKENPRUNE_CI=1 and must provide this; it is not skipped in CI)")
    pytest.skip(reason)
