"""Every built-in strategy has a row in the exactness matrix (docs/concepts.md, "The exactness contract").

The matrix is spread over the test modules that run the contract's cells; each declares the
strategies it runs in a module-level table, and `exactness_rows` reads those tables, so a row is
exactly what the cells run, not a second list to keep in sync. Registering a new strategy without
adding it to one of them fails `test_every_built_in_strategy_has_an_exactness_row`, naming it.
"""

from __future__ import annotations

from collections import defaultdict

import test_encoder
import test_exactness
import test_exactness_zoo
import test_temporal_strategies
import test_zoo_encoder
import test_zoo_qwen_projector

from tokenprune import Strategy, StrategyConfig
from tokenprune.components import ConstantScorer, StageScheduler, TopKDrop
from tokenprune.registry import Registry, StrategySpec, get_registry

DISTRIBUTION = "tokenprune-vlm"


def exactness_rows() -> dict[str, list[str]]:
    """Strategy name -> the matrices whose cells run it."""
    rows: dict[str, list[str]] = defaultdict(list)
    rows[test_exactness.STRATEGY].append("test_exactness.py: family x backend x layout (+ training)")
    for cell, (strategy, _, _) in test_exactness_zoo.ZOO.items():
        if strategy is not None:  # None: composed by component names, not a registered strategy
            rows[strategy].append(f"test_exactness_zoo.py: {cell} (+ eager and training in test_exactness_zoo_more.py)")
    for name in test_zoo_encoder.CASES:
        rows[name].append("test_zoo_encoder.py: identity, cache, batch invariance on LLaVA")
    for name in test_zoo_qwen_projector.OPTIONS:
        rows[name].append("test_zoo_qwen_projector.py: identity, cache, batch invariance on Qwen2-VL")
    rows[test_encoder.TOME].append("test_encoder.py: batch invariance and training in vision encoders")
    for name in test_temporal_strategies.OPTIONS:
        rows[name].append("test_temporal_strategies.py: identity, cache, batch invariance, masked reference on Qwen and OneVision video batches")
    return dict(rows)


def missing_rows(registry: Registry) -> list[str]:
    """Built-in strategies of ``registry`` (this distribution's) that no exactness matrix runs."""
    rows = exactness_rows()
    built_in = [s.name for s in registry.strategies.values() if s.source.split(" ")[0] == DISTRIBUTION]
    return sorted(name for name in built_in if name not in rows)


def test_every_built_in_strategy_has_an_exactness_row():
    missing = missing_rows(get_registry())
    assert not missing, (
        f"Strategies without exactness cells: {missing}. Add each to a matrix (e.g. ZOO in "
        "tests/test_exactness_zoo.py for an LLM-side strategy, CASES in tests/test_zoo_encoder.py for a "
        "projector-side one); see docs/contributing.md, 'Where code goes'."
    )


def test_every_row_names_a_registered_strategy():
    """A row for a renamed or removed strategy is stale: the matrix would run nothing under that name."""
    registered = set(get_registry().strategies)
    assert set(exactness_rows()) <= registered, sorted(set(exactness_rows()) - registered)


class _NewConfig(StrategyConfig):
    """A strategy with no options."""


def test_a_newly_registered_strategy_without_a_row_is_reported():
    registry = Registry.load(entry_points=True)  # a private registry: the shared one stays as it is
    source = next(s.source for s in registry.strategies.values() if s.source.split(" ")[0] == DISTRIBUTION)
    build = lambda c: Strategy(StageScheduler([2], [0.5]), ConstantScorer(), TopKDrop())  # noqa: E731
    registry.strategies["brand_new"] = StrategySpec("brand_new", _NewConfig, build, source)
    assert missing_rows(registry) == ["brand_new"]
