"""The plugin registry: strategies and adapters contributed through the ``tokenprune`` hooks.

Plugins are loaded once, lazily (on the first `wrap` or `list_strategies`), from the
``tokenprune`` entry-point group. Built-ins come through the same group, so they are found the same
way a third-party package is. Tests build private registries with ``Registry.load(...)``.
"""

from __future__ import annotations

import importlib.metadata
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .mix_and_match import COMPONENT_KINDS, compose
from .config import StrategyConfig
from .errors import RegistrationError, UnknownComponentError, UnknownStrategyError, UnsupportedModelError

if TYPE_CHECKING:
    from .vision_language import BuiltStrategy
    from .adapters.base import Adapter
    from .adapters.encoder_base import EncoderAdapter

__all__ = [
    "Registry",
    "StrategySpec",
    "AdapterSpec",
    "ComponentSpec",
    "EncoderAdapterSpec",
    "get_registry",
    "reset_registry",
]

ENTRY_POINT_GROUP = "tokenprune"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy: its name, config class, builder and where it came from."""

    name: str
    config_cls: type[StrategyConfig]
    build: Callable[[StrategyConfig], BuiltStrategy]
    source: str
    aliases: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class ComponentSpec:
    """A registered component: kind, name, config class, builder and where it came from."""

    kind: str
    name: str
    config_cls: type[StrategyConfig]
    build: Callable[[Any], Any]
    source: str
    description: str = ""

    def sites(self) -> frozenset[str]:
        """Where the default-configured component can act (see `tokenprune.interfaces.Site`)."""
        try:
            built = self.build(self.config_cls())
        except Exception:  # a component without defaults: read the class attribute if the builder is a class
            built = self.build
        return frozenset(getattr(built, "sites", {"llm"}))


@dataclass(frozen=True)
class AdapterSpec:
    """A registered adapter and where it came from."""

    adapter: Adapter
    source: str

    @property
    def name(self) -> str:
        """The adapter's registry name."""
        return self.adapter.name


@dataclass(frozen=True)
class EncoderAdapterSpec(AdapterSpec):
    """A registered vision-encoder adapter and where it came from."""

    adapter: EncoderAdapter


@dataclass
class Registry:
    """Strategies and adapters by name."""

    strategies: dict[str, StrategySpec] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    adapters: dict[str, AdapterSpec] = field(default_factory=dict)
    encoder_adapters: dict[str, EncoderAdapterSpec] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    """Plugins whose import failed: ``"<distribution>:<entry point>"`` -> the error."""
    components: dict[str, dict[str, ComponentSpec]] = field(default_factory=lambda: {k: {} for k in COMPONENT_KINDS})
    """kind (``"scheduler"``, ``"scorer"``, ``"reducer"``) -> name -> spec."""

    # -- loading ------------------------------------------------------------------------------
    @classmethod
    def load(cls, *, entry_points: bool = True, plugins: Iterable[object] = ()) -> Registry:
        """Build a registry from the entry-point group and/or explicit plugin objects (modules)."""
        pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        pm.add_hookspecs(hookspecs)
        sources: dict[str, str] = {}
        failed: dict[str, str] = {}
        if entry_points:
            sources.update(_load_entry_points(pm, failed))
        for plugin in plugins:
            pm.register(plugin)
        pm.check_pending()  # a misspelled tokenprune_* hook name fails loudly
        registry = cls(failed=failed)
        for impl in pm.hook.tokenprune_register_strategies.get_hookimpls():
            source = sources.get(impl.plugin_name, impl.plugin_name)
            impl.function(register=registry._strategy_registrar(source))
        for impl in pm.hook.tokenprune_register_adapters.get_hookimpls():
            source = sources.get(impl.plugin_name, impl.plugin_name)
            impl.function(register=registry._adapter_registrar(source))
        for impl in pm.hook.tokenprune_register_components.get_hookimpls():
            source = sources.get(impl.plugin_name, impl.plugin_name)
            impl.function(register=registry._component_registrar(source))
        for impl in pm.hook.tokenprune_register_encoder_adapters.get_hookimpls():
            source = sources.get(impl.plugin_name, impl.plugin_name)
            impl.function(register=registry._encoder_adapter_registrar(source))
        return registry

    def _component_registrar(self, source: str) -> hookspecs.RegisterComponent:
        def register(
            kind: str,
            name: str,
            config_cls: type[StrategyConfig],
            build: Callable[[Any], Any],
            *,
            description: str = "",
        ) -> None:
            if kind not in self.components:
                raise RegistrationError(
                    f"Component {name!r} from {source}: kind {kind!r} is not one of {', '.join(COMPONENT_KINDS)}."
                )
            _check_name(name, kind)
            if name in self.components[kind]:
                owner = self.components[kind][name].source
                raise RegistrationError(f"The {kind} name {name!r} from {source} is already registered by {owner}.")
            if not (isinstance(config_cls, type) and issubclass(config_cls, StrategyConfig)):
                raise RegistrationError(f"The {kind} {name!r} from {source}: config_cls must subclass StrategyConfig.")
            self.components[kind][name] = ComponentSpec(kind, name, config_cls, build, source, description)

        return register

    def _strategy_registrar(self, source: str) -> hookspecs.RegisterStrategy:
        def register(
            name: str,
            config_cls: type[StrategyConfig],
            build: Callable[[StrategyConfig], BuiltStrategy],
            *,
            aliases: Sequence[str] = (),
            description: str = "",
        ) -> None:
            for key in (name, *aliases):
                _check_name(key, "strategy")
                owner = self.strategies.get(key) or self.strategies.get(self.aliases.get(key, ""))
                if owner is not None:
                    raise RegistrationError(
                        f"Strategy name {key!r} from {source} is already registered by {owner.source}."
                    )
            if not (isinstance(config_cls, type) and issubclass(config_cls, StrategyConfig)):
                raise RegistrationError(f"Strategy {name!r} from {source}: config_cls must subclass StrategyConfig.")
            self.strategies[name] = StrategySpec(name, config_cls, build, source, tuple(aliases), description)
            self.aliases.update({alias: name for alias in aliases})

        return register

    def _adapter_registrar(self, source: str) -> hookspecs.RegisterAdapter:
        def register(adapter: Adapter) -> None:
            _check_name(adapter.name, "adapter")
            if adapter.name in self.adapters:
                owner = self.adapters[adapter.name].source
                raise RegistrationError(f"Adapter {adapter.name!r} from {source} is already registered by {owner}.")
            self.adapters[adapter.name] = AdapterSpec(adapter, source)

        return register

    def _encoder_adapter_registrar(self, source: str) -> hookspecs.RegisterEncoderAdapter:
        def register(adapter: EncoderAdapter) -> None:
            _check_name(adapter.name, "encoder adapter")
            if adapter.name in self.encoder_adapters or adapter.name in self.adapters:
                owner = (self.encoder_adapters.get(adapter.name) or self.adapters[adapter.name]).source
                raise RegistrationError(f"Adapter {adapter.name!r} from {source} is already registered by {owner}.")
            self.encoder_adapters[adapter.name] = EncoderAdapterSpec(adapter, source)

        return register

    # -- lookups ------------------------------------------------------------------------------
    def strategy(self, name: str) -> StrategySpec:
        """The spec registered under ``name`` or one of its aliases."""
        key = self.aliases.get(name, name)
        if key not in self.strategies:
            raise UnknownStrategyError(name, [*self.strategies, *self.aliases], failed=self.failed)
        return self.strategies[key]

    def build(self, name: str, **options: Any) -> BuiltStrategy:
        """Validate ``options`` with the strategy's config class and build the strategy.

        Raises:
            UnknownStrategyError: ``name`` is not registered (the message lists the known names).
            pydantic.ValidationError: an option is invalid (the message names it and why).
        """
        spec = self.strategy(name)
        config = spec.config_cls(**options)
        return spec.build(config)

    def component(self, kind: str, name: str) -> ComponentSpec:
        """The scheduler, scorer or reducer registered under ``name``."""
        if kind not in self.components:
            raise ValueError(f"kind must be one of {', '.join(COMPONENT_KINDS)}, got {kind!r}.")
        if name not in self.components[kind]:
            known = sorted(self.components[kind])
            import difflib

            hint = difflib.get_close_matches(name, known, n=1)
            raise UnknownComponentError(
                f"Unknown {kind} {name!r}.{f' Did you mean {hint[0]!r}?' if hint else ''} "
                f"Known {kind}s: {', '.join(known) or '(none)'}. Run `tokenprune list` to see every component."
            )
        return self.components[kind][name]

    def compose(self, **names_and_options: Any) -> BuiltStrategy:
        """A strategy from component names: ``compose(scheduler="pyramid", scorer="l2norm", ratio=0.5)``.

        See `tokenprune.mix_and_match.compose` for how options are routed and what is checked.
        """
        return compose(self, **names_and_options)

    def adapter_for(self, model: object) -> Adapter:
        """The first registered adapter that matches ``model``."""
        for spec in self.adapters.values():
            if spec.adapter.matches(model):
                return spec.adapter
        supported = [t for spec in self.adapters.values() for t in spec.adapter.model_types]
        encoders = [spec.adapter.description or spec.name for spec in self.encoder_adapters.values()]
        hint = (f"Vision encoders supported: {'; '.join(encoders)}. " if encoders else "") + (
            "Wrap the full *ForConditionalGeneration model, or register an adapter for this family "
            "(see docs: 'Add an adapter')."
        )
        raise UnsupportedModelError(model, supported, hint=hint)

    def adapter_for_config(self, config: object) -> Adapter | None:
        """The first registered adapter that handles models of ``config`` (``None`` if none); no model needed."""
        for spec in self.adapters.values():
            if spec.adapter.handles_config(config):
                return spec.adapter
        return None

    def encoder_adapter_for(self, model: object) -> EncoderAdapter | None:
        """The first registered vision-encoder adapter that matches ``model`` (``None`` if none)."""
        for spec in self.encoder_adapters.values():
            if spec.adapter.matches(model):
                return spec.adapter
        return None


def _load_entry_points(pm: pluggy.PluginManager, failed: dict[str, str]) -> dict[str, str]:
    """Register every ``tokenprune`` entry point under ``"<distribution>:<entry point>"``.

    pluggy's own loader keys plugins by entry-point name alone and silently skips a second one of
    the same name, so a third-party ``pyramiddrop`` entry point would shadow (or be shadowed by) the
    built-in without a word. Distinct plugin names let both register, and the registry's duplicate
    check then names the clash. A plugin whose import fails is reported by name (a warning, and
    ``Registry.failed``); the others still load.
    """
    sources = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        name = f"{dist.name if dist is not None else '?'}:{ep.name}"
        if pm.get_plugin(name) is not None or pm.is_blocked(name):
            continue  # the same distribution seen twice on sys.path
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken third-party plugin must not take the library down
            failed[name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"tokenprune plugin {name!r} failed to import and is skipped: {failed[name]}", stacklevel=2)
            continue
        pm.register(plugin, name=name)
        sources[name] = _dist_name(dist) if dist is not None else ep.value
    return sources


def _check_name(name: str, kind: str) -> None:
    if not _NAME.match(name):
        raise RegistrationError(f"Invalid {kind} name {name!r}: use lowercase letters, digits and '_' ([a-z][a-z0-9_]*).")


def _dist_name(dist: Any) -> str:
    try:
        return f"{dist.metadata['name']} {dist.version}"
    except Exception:  # pragma: no cover - exotic distribution objects
        return str(getattr(dist, "project_name", dist))


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded from the entry-point group on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry.load()
    return _REGISTRY


def reset_registry() -> None:
    """Forget the loaded registry (the next lookup reloads the entry points)."""
    global _REGISTRY
    _REGISTRY = None

