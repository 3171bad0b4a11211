"""The plugin registry: entry points, explicit plugins, name rules and lookups.

Private registries are built with ``Registry.load(entry_points=False, plugins=[...])`` so these tests
never depend on what else is installed; where a test needs ``wrap`` to see a private registry it is
swapped in with ``monkeypatch`` (``tokenprune.registry._REGISTRY``), and the real one comes back after.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import types

import pluggy
import pytest
import torch

import tiny_models as tm
import tokenprune
from tokenprune import registry as registry_mod
from tokenprune.components import QueryAttentionScorer, StageScheduler, TopKDrop
from tokenprune.errors import RegistrationError, UnknownStrategyError, UnsupportedModelError
from tokenprune.interfaces import Reducer, Reduction, Strategy
from tokenprune.plugins.pyramiddrop import PyramidDropConfig
from tokenprune.registry import Registry

DIST = "tokenprune-vlm"


# ----------------------------------------------------------------------------------------------
# Helpers: fake plugins are module objects, the same kind of object an entry point loads.
# ----------------------------------------------------------------------------------------------
class KeepFirstConfig(tokenprune.StrategyConfig):
    """A third-party style config: one option, validated by pydantic."""

    keep: float = 0.5


class KeepFirst(Reducer):
    """Keeps the earliest candidates (ignores scores), so its choice is predictable in a test."""

    def reduce(self, ctx, scores, candidates, n_keep):
        rank = candidates.long().cumsum(1)
        return Reduction(keep=candidates & (rank <= n_keep.unsqueeze(1)))


def build_keep_first(config: KeepFirstConfig) -> Strategy:
    return Strategy(
        scheduler=StageScheduler([0.5], [config.keep]),
        scorer=QueryAttentionScorer(),
        reducer=KeepFirst(),
        name="keepfirst",
        config=config,
    )


def strategy_plugin(module_name: str, *entries: tuple[str, tuple[str, ...]], config_cls=KeepFirstConfig):
    """A module-like plugin registering one strategy per ``(name, aliases)`` entry."""
    plugin = types.ModuleType(module_name)

    @tokenprune.hookimpl
    def tokenprune_register_strategies(register):
        for name, aliases in entries:
            register(name, config_cls, build_keep_first, aliases=aliases, description=f"{name} from {module_name}")

    plugin.tokenprune_register_strategies = tokenprune_register_strategies
    return plugin


def adapter_plugin(module_name: str, adapter) -> types.ModuleType:
    plugin = types.ModuleType(module_name)

    @tokenprune.hookimpl
    def tokenprune_register_adapters(register):
        register(adapter)

    plugin.tokenprune_register_adapters = tokenprune_register_adapters
    return plugin


# ----------------------------------------------------------------------------------------------
# Built-ins through the entry-point group
# ----------------------------------------------------------------------------------------------
def test_builtins_come_through_the_entry_point_group():
    from importlib.metadata import entry_points

    eps = {ep.name: ep for ep in entry_points(group="tokenprune")}
    assert eps["pyramiddrop"].value == "tokenprune.plugins.pyramiddrop"
    assert eps["llava"].value == "tokenprune.adapters.llava"
    assert eps["pyramiddrop"].dist.metadata["name"] == DIST

    reg = Registry.load()
    spec = reg.strategies["pyramiddrop"]
    assert spec.source.startswith(DIST + " "), spec.source
    assert spec.source == f"{DIST} {tokenprune.__version__}"
    assert spec.config_cls is PyramidDropConfig
    assert spec.aliases == ("pdrop",)
    assert reg.adapters["llava"].source == spec.source
    assert reg.adapters["llava"].adapter.model_types == ("llava", "llava_next", "llava_onevision")


def test_nothing_is_registered_without_entry_points_or_plugins():
    reg = Registry.load(entry_points=False)
    assert reg.strategies == {} and reg.adapters == {} and reg.aliases == {}
    with pytest.raises(UnknownStrategyError, match=r"Known strategies: \(none\)"):
        reg.build("pyramiddrop")
    with pytest.raises(UnsupportedModelError, match=r"Supported model types: \(none\)"):
        reg.adapter_for(tm.make_llava(dtype=torch.float32))


def test_global_registry_is_the_entry_point_registry_and_reloads(monkeypatch):
    monkeypatch.setattr(registry_mod, "_REGISTRY", None)
    first = tokenprune.get_registry()
    assert first is tokenprune.get_registry()  # loaded once
    assert "pyramiddrop" in tokenprune.list_strategies()
    registry_mod.reset_registry()
    second = tokenprune.get_registry()
    assert second is not first and set(second.strategies) == set(first.strategies)


def test_third_party_distribution_is_found_through_the_entry_point_group(tmp_path, monkeypatch):
    """A package installed with a `tokenprune` entry point is picked up with its distribution name."""
    (tmp_path / "tp_fake_plugin.py").write_text(
        textwrap.dedent(
            """
            import tokenprune
            from tokenprune.components import QueryAttentionScorer, StageScheduler, TopKDrop

            class Cfg(tokenprune.StrategyConfig):
                pass

            def build(config):
                return tokenprune.Strategy(StageScheduler([0.5], [0.5]), QueryAttentionScorer(), TopKDrop(),
                                           name="fakethird", config=config)

            @tokenprune.hookimpl
            def tokenprune_register_strategies(register):
                register("fakethird", Cfg, build)
            """
        )
    )
    info = tmp_path / "tokenprune_fake-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tokenprune-fake\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[tokenprune]\nfakethird = tp_fake_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    try:
        reg = Registry.load()
    finally:
        sys.modules.pop("tp_fake_plugin", None)
    assert reg.strategies["fakethird"].source == "tokenprune-fake 1.2.3"
    assert reg.strategies["pyramiddrop"].source.startswith(DIST)
    assert reg.build("fakethird").name == "fakethird"


def test_third_party_entry_point_named_like_a_builtin_is_not_silently_shadowed(tmp_path, monkeypatch):
    (tmp_path / "tp_colliding_plugin.py").write_text(
        textwrap.dedent(
            """
            import tokenprune
            from tokenprune.plugins.pyramiddrop import PyramidDropConfig, build

            @tokenprune.hookimpl
            def tokenprune_register_strategies(register):
                register("colliding", PyramidDropConfig, build)
            """
        )
    )
    info = tmp_path / "tp_colliding-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tp-colliding\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tokenprune]\nllava = tp_colliding_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    try:
        reg = Registry.load()
    finally:
        sys.modules.pop("tp_colliding_plugin", None)
    # Both packages' registrations must be present (or a RegistrationError raised) -- never a silent pick.
    assert "colliding" in reg.strategies
    assert "llava" in reg.adapters and reg.adapters["llava"].source.startswith(DIST)


# ----------------------------------------------------------------------------------------------
# Explicit plugins
# ----------------------------------------------------------------------------------------------
def test_fake_plugin_strategy_builds_its_strategy():
    reg = Registry.load(entry_points=False, plugins=[strategy_plugin("fake_plugin", ("keepfirst", ("kf",)))])
    spec = reg.strategy("keepfirst")
    assert spec.source == "fake_plugin"
    assert spec.description == "keepfirst from fake_plugin"
    assert reg.strategy("kf") is spec
    strategy = reg.build("keepfirst", keep=0.25)
    assert isinstance(strategy, Strategy) and isinstance(strategy.reducer, KeepFirst)
    assert strategy.config == KeepFirstConfig(keep=0.25)
    assert strategy.scheduler.keep_counts(16, 8) == (4,)
    with pytest.raises(Exception, match=r"Unknown option\(s\) 'kep' for KeepFirstConfig\. Did you mean 'keep'"):
        reg.build("keepfirst", kep=0.25)  # a misspelled option is an error, not a silent default


def test_fake_plugin_strategy_runs_through_wrap(monkeypatch):
    reg = Registry.load(plugins=[strategy_plugin("fake_plugin", ("keepfirst", ()))])
    monkeypatch.setattr(registry_mod, "_REGISTRY", reg)
    model = tm.make_llava(dtype=torch.float32)
    inputs = tm.llava_inputs(model, "single")
    with tokenprune.pruned(model, "keepfirst", keep=0.25) as handle:
        assert isinstance(handle.strategy.reducer, KeepFirst)
        assert handle.layers == (4,)  # 0.5 of 8 layers
        with torch.no_grad():
            model(**inputs)
        positions, valid = handle.kept_positions()
    visual = (inputs["input_ids"][0] == tm.IMAGE_ID).nonzero().squeeze(1)
    text = (inputs["input_ids"][0] != tm.IMAGE_ID).nonzero().squeeze(1)
    # KeepFirst keeps the 4 earliest visual tokens (int(16 * 0.25)) and every text token.
    expected = torch.sort(torch.cat([visual[:4], text])).values
    assert torch.equal(positions[0], expected) and bool(valid.all())
    assert handle.stats.visual_tokens[3] == [16] and handle.stats.visual_tokens[4] == [4]


def test_fake_adapter_plugin_is_used_for_its_model_type():
    from tokenprune.adapters.llava import LlavaAdapter

    class OnlyNext(LlavaAdapter):
        name = "onlynext"
        model_types = ("llava_next",)

    reg = Registry.load(entry_points=False, plugins=[adapter_plugin("fake_adapters", OnlyNext())])
    assert reg.adapters["onlynext"].source == "fake_adapters"
    assert reg.adapter_for(tm.make_llava_next(dtype=torch.float32)).name == "onlynext"
    with pytest.raises(UnsupportedModelError, match=r"model_type='llava'\). Supported model types: llava_next\."):
        reg.adapter_for(tm.make_llava(dtype=torch.float32))


# ----------------------------------------------------------------------------------------------
# Duplicates and invalid names
# ----------------------------------------------------------------------------------------------
def test_duplicate_strategy_name_names_both_sources():
    with pytest.raises(RegistrationError) as err:
        Registry.load(plugins=[strategy_plugin("intruder", ("pyramiddrop", ()))])
    msg = str(err.value)
    assert "'pyramiddrop'" in msg and "intruder" in msg and DIST in msg and "already registered" in msg


def test_duplicate_between_two_plugins_names_both_sources():
    plugins = [strategy_plugin("first_plugin", ("same", ())), strategy_plugin("second_plugin", ("same", ()))]
    with pytest.raises(RegistrationError) as err:
        Registry.load(entry_points=False, plugins=plugins)
    msg = str(err.value)
    assert "'same'" in msg and "first_plugin" in msg and "second_plugin" in msg


@pytest.mark.parametrize(
    "entry, clash",
    [
        (("other", ("pdrop",)), "pdrop"),  # alias taken by an existing alias
        (("other", ("pyramiddrop",)), "pyramiddrop"),  # alias equal to an existing name
        (("pdrop", ()), "pdrop"),  # name equal to an existing alias
    ],
)
def test_duplicate_alias_names_both_sources(entry, clash):
    with pytest.raises(RegistrationError) as err:
        Registry.load(plugins=[strategy_plugin("alias_plugin", entry)])
    msg = str(err.value)
    assert f"{clash!r}" in msg and "alias_plugin" in msg and DIST in msg


def test_failed_registration_registers_nothing_of_that_strategy():
    reg = Registry.load(entry_points=False)
    register = reg._strategy_registrar("p")
    register("alpha", KeepFirstConfig, build_keep_first, aliases=("a1",))
    with pytest.raises(RegistrationError):
        register("beta", KeepFirstConfig, build_keep_first, aliases=("b1", "a1"))
    assert set(reg.strategies) == {"alpha"} and reg.aliases == {"a1": "alpha"}


def test_duplicate_adapter_names_both_sources():
    from tokenprune.adapters.llava import LlavaAdapter

    with pytest.raises(RegistrationError) as err:
        Registry.load(plugins=[adapter_plugin("adapter_intruder", LlavaAdapter())])
    msg = str(err.value)
    assert "Adapter 'llava'" in msg and "adapter_intruder" in msg and DIST in msg


@pytest.mark.parametrize("bad", ["PyramidDrop", "1drop", "my-drop", "my drop", "", "_drop", "drop!"])
def test_invalid_strategy_names_raise(bad):
    with pytest.raises(RegistrationError, match=r"Invalid strategy name .*\[a-z\]\[a-z0-9_\]\*"):
        Registry.load(entry_points=False, plugins=[strategy_plugin("bad_names", (bad, ()))])
    with pytest.raises(RegistrationError, match="Invalid strategy name"):
        Registry.load(entry_points=False, plugins=[strategy_plugin("bad_alias", ("good_name", (bad,)))])


def test_invalid_adapter_name_raises():
    from tokenprune.adapters.llava import LlavaAdapter

    class Bad(LlavaAdapter):
        name = "Bad-Adapter"

    with pytest.raises(RegistrationError, match=r"Invalid adapter name 'Bad-Adapter'"):
        Registry.load(entry_points=False, plugins=[adapter_plugin("bad_adapter", Bad())])


def test_config_class_must_subclass_strategy_config():
    from pydantic import BaseModel

    class NotAConfig(BaseModel):
        pass

    with pytest.raises(RegistrationError, match="config_cls must subclass StrategyConfig"):
        Registry.load(entry_points=False, plugins=[strategy_plugin("bad_cfg", ("okname", ()), config_cls=NotAConfig)])


def test_misspelled_hook_name_is_caught_by_check_pending():
    plugin = types.ModuleType("typo_plugin")

    @tokenprune.hookimpl
    def tokenprune_register_strategy(register):  # missing the final "s"
        register("typo", KeepFirstConfig, build_keep_first)

    plugin.tokenprune_register_strategy = tokenprune_register_strategy
    with pytest.raises(pluggy.PluginValidationError, match="unknown hook 'tokenprune_register_strategy'"):
        Registry.load(entry_points=False, plugins=[plugin])


# ----------------------------------------------------------------------------------------------
# Lookups
# ----------------------------------------------------------------------------------------------
def test_unknown_strategy_lists_known_names_with_suggestion():
    reg = Registry.load()
    with pytest.raises(UnknownStrategyError) as err:
        reg.build("pyramidrop")
    msg = str(err.value)
    assert "Unknown strategy 'pyramidrop'." in msg
    assert "Did you mean 'pyramiddrop'?" in msg
    assert "Known strategies: " in msg and "pdrop" in msg and "pyramiddrop" in msg
    assert err.value.name == "pyramidrop" and "pyramiddrop" in err.value.known
    assert isinstance(err.value, KeyError) and not msg.startswith('"')  # readable, not KeyError-quoted


def test_unknown_strategy_without_close_match_has_no_suggestion():
    with pytest.raises(UnknownStrategyError) as err:
        Registry.load().strategy("zzzz")
    assert "Did you mean" not in str(err.value) and "pyramiddrop" in str(err.value)


def test_unknown_strategy_through_wrap_attaches_nothing():
    model = tm.make_llava(dtype=torch.float32)
    with pytest.raises(UnknownStrategyError, match="Did you mean 'pyramiddrop'"):
        tokenprune.wrap(model, "pyramidrop")
    assert not hasattr(model, "tokenprune")
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_alias_pdrop_builds_pyramiddrop():
    reg = Registry.load()
    assert reg.strategy("pdrop") is reg.strategy("pyramiddrop")
    model = tokenprune.wrap(tm.make_llava(dtype=torch.float32), "pdrop", ratio=0.25)
    handle = model.tokenprune
    assert handle.strategy.name == "pyramiddrop"
    assert handle.config == PyramidDropConfig(ratio=0.25)
    assert handle.plan([16]).keep == ((4,), (1,), (0,))
    tokenprune.unwrap(model)


def test_custom_strategy_object_from_components_wraps_directly():
    model = tm.make_llava(dtype=torch.float64)
    inputs = tm.llava_inputs(model, "left_padded")
    with torch.no_grad():
        tokenprune.wrap(model, "pyramiddrop")
        by_name = model(**inputs).logits
        stats_by_name = model.tokenprune.stats
        tokenprune.unwrap(model)

        custom = Strategy(
            scheduler=StageScheduler([2, 4, 6], [0.5, 0.25, 0.125]),
            scorer=QueryAttentionScorer(),
            reducer=TopKDrop(),
        )
        tokenprune.wrap(model, custom)
        handle = model.tokenprune
        assert handle.strategy is custom and handle.config is None and handle.strategy.name == "custom"
        assert handle.layers == (2, 4, 6)
        by_object = model(**inputs).logits
        tokenprune.unwrap(model)
    assert by_object.shape == by_name.shape == (2, 18, tm.VOCAB_SIZE)
    assert torch.equal(by_object, by_name)  # same components as the registered pyramiddrop
    assert handle.stats.visual_tokens == stats_by_name.visual_tokens


def test_a_plugin_that_fails_to_import_is_reported_and_the_rest_still_loads(monkeypatch):
    import importlib.metadata

    import tokenprune.registry as registry_module

    real = importlib.metadata.entry_points(group="tokenprune")
    broken = importlib.metadata.EntryPoint(name="broken", value="tokenprune_no_such_module_xyz", group="tokenprune")
    monkeypatch.setattr(registry_module.importlib.metadata, "entry_points", lambda group: [*real, broken])
    with pytest.warns(UserWarning, match=r"tokenprune plugin '\?:broken' failed to import"):
        registry = Registry.load()
    assert "pyramiddrop" in registry.strategies and "llava" in registry.adapters
    assert registry.failed["?:broken"].startswith("ModuleNotFoundError")
    with pytest.raises(UnknownStrategyError, match=r"Plugin '\?:broken' failed to import \(ModuleNotFoundError"):
        registry.strategy("brokenmethod")
