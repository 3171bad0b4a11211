"""The public entry points: `wrap`, `unwrap`, `pruned` and the `WrapHandle`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from .engine import CallStats, Engine
from .engine.runtime import check_attention
from .errors import AlreadyWrappedError, NotWrappedError, UnsupportedFeatureError
from .interfaces import Strategy
from .registry import get_registry
from .schedule import Schedule

__all__ = ["wrap", "unwrap", "pruned", "handle_of", "WrapHandle", "HANDLE_ATTR"]

HANDLE_ATTR = "tokenprune"
"""A wrapped model carries its `WrapHandle` at ``model.tokenprune``."""


class WrapHandle:
    """The live link between a model and its strategy.

    Found at ``model.tokenprune`` after `wrap`. Use it to read what the last forward did
    (`stats`), the resolved `layers`, the `config`, or to `remove` the hooks (also as a
    context manager: leaving the ``with`` block unwraps).
    """

    def __init__(self, model: nn.Module, strategy: Strategy, adapter_name: str, engine: Engine):
        self.model = model
        self.strategy = strategy
        self.adapter_name = adapter_name
        self._engine = engine

    @property
    def config(self) -> Any:
        """The validated strategy config (a pydantic model), or ``None`` for a hand-built strategy."""
        return self.strategy.config

    @property
    def layers(self) -> tuple[int, ...]:
        """Resolved reduction layers (0-based first layer of each reduced stage)."""
        return self._engine.layers

    @property
    def num_layers(self) -> int:
        return self._engine.stack.num_layers

    @property
    def stats(self) -> CallStats | None:
        """What the last prefill/training forward with visual tokens did (``None`` before the first)."""
        return self._engine.stats

    def plan(self, num_visual: list[int]) -> Schedule:
        """The schedule a batch whose samples hold ``num_visual`` visual tokens would get."""
        return self.strategy.scheduler.plan(self.num_layers, num_visual)

    def kept_positions(self) -> tuple[Any, Any] | None:
        """``(positions, valid)``, each ``(B, n)``: the original position of every row of the last
        forward's output (``logits[:, j]`` belongs to ``input_ids[b, positions[b, j]]``), and False
        for filler rows. ``None`` when the last forward removed nothing."""
        final = self._engine.final
        return None if final is None else (final[1].idx, final[1].valid)

    def selection(self) -> list[tuple[int, Any, Any]]:
        """Per stage of the last prefill: ``(first_layer, positions, valid)``.

        ``positions`` (``(B, n)``) are the original positions of the slots layers from
        ``first_layer`` on hold; ``valid`` is False for filler slots. Stage 0 is the full sequence.
        Useful to visualise which patches survived, or to replay a selection.
        """
        return [(stage.layer, stage.idx, stage.valid) for stage in self._engine.stages]

    @property
    def active(self) -> bool:
        return getattr(self.model, HANDLE_ATTR, None) is self

    def remove(self) -> nn.Module:
        """Detach the hooks and restore the model exactly (same as `unwrap`)."""
        return unwrap(self.model)

    def __enter__(self) -> WrapHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.active:
            self.remove()

    def __repr__(self) -> str:
        return f"WrapHandle(strategy={self.strategy.name!r}, adapter={self.adapter_name!r}, layers={list(self.layers)})"


COMPONENT_OPTIONS = ("scheduler", "scorer", "reducer")
"""Options of `wrap` that compose a strategy from registered components instead of naming one."""


class _DefaultStrategy(str):
    """The default strategy name, recognisable by identity (so an explicit name is never mistaken for it)."""


DEFAULT_STRATEGY = _DefaultStrategy("pyramiddrop")


def _describe(strategy: object) -> str:
    return repr(strategy) if isinstance(strategy, str) else type(strategy).__name__


def _resolve_strategy(strategy: str | Strategy, options: dict[str, Any]) -> Strategy:
    if any(key in options for key in COMPONENT_OPTIONS):
        if strategy is not DEFAULT_STRATEGY:
            raise TypeError(
                f"Give either a strategy (got {_describe(strategy)}) or "
                "components (scheduler=, scorer=, reducer=), not both: components compose a strategy of their own."
            )
        return get_registry().compose(**options)
    if isinstance(strategy, Strategy):
        if options:
            raise TypeError(
                f"Options {sorted(options)} were given with a Strategy object; options configure a strategy "
                "by name only (e.g. wrap(model, 'pyramiddrop', ratio=0.5))."
            )
        return strategy
    if isinstance(strategy, str):
        return get_registry().build(strategy, **options)
    raise TypeError(f"strategy must be a registered name or a tokenprune.Strategy, got {type(strategy).__name__}.")


def wrap(model: nn.Module, strategy: str | Strategy = DEFAULT_STRATEGY, /, **options: Any) -> nn.Module:
    """Attach a token-reduction strategy to ``model`` and return the same model.

    Args:
        model: a supported transformers VLM (``tokenprune list`` shows the adapters).
        strategy: a registered strategy name (e.g. ``"pyramiddrop"``, the default) or a `Strategy`
            object. Leave it out and pass ``scheduler=``, ``scorer=`` and/or ``reducer=`` (registered
            component names) to compose a strategy instead.
        **options: the strategy's (or the components') config options, validated before anything is
            attached.

    Returns:
        ``model`` itself, with removable hooks and its `WrapHandle` at ``model.tokenprune``.

    Raises:
        UnknownStrategyError: the name is not registered (the message lists the known ones).
        pydantic.ValidationError: an option is invalid.
        UnsupportedModelError: no adapter handles the model (the message lists supported types).
        ScheduleError: the schedule does not fit this model (e.g. a layer out of range).
        UnsupportedFeatureError: flex attention, static cache, or compact positions where undefined.
        AlreadyWrappedError: the model is already wrapped.
        IncompatibleComponentsError: composed components that cannot work together.

    Example:
        ```python
        model = tokenprune.wrap(model, "pyramiddrop", layer_list=[8, 16, 24], image_token_ratio_list=[0.5, 0.25, 0.125])
        out = model.generate(**inputs)
        print(model.tokenprune.stats.visual_tokens)
        tokenprune.unwrap(model)
        ```
    """
    if isinstance(getattr(model, HANDLE_ATTR, None), WrapHandle):
        raise AlreadyWrappedError(
            f"This model is already wrapped with {model.tokenprune.strategy.name!r}; call tokenprune.unwrap(model) first."
        )
    resolved = _resolve_strategy(strategy, options)
    adapter = get_registry().adapter_for(model)
    adapter.check(model)
    if resolved.positions == "compact" and not adapter.supports_compact_positions:
        raise UnsupportedFeatureError(
            f"positions='compact' is undefined for {type(model).__name__}: its rotary positions are not 1-D. "
            "Use positions='keep' (every kept token keeps its original position)."
        )
    engine = Engine(model, adapter, resolved)
    check_attention(engine.stack.attn_implementation)
    generation = getattr(model, "generation_config", None)
    if getattr(generation, "cache_implementation", None) == "static":
        raise UnsupportedFeatureError(
            "generation_config.cache_implementation='static' is not supported yet (reduced layers hold fewer "
            "tokens than a static cache's fixed length). Set it to None to use the default DynamicCache."
        )
    engine.install()
    object.__setattr__(model, HANDLE_ATTR, WrapHandle(model, resolved, adapter.name, engine))
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """Detach the strategy from ``model``: hooks removed, loss function restored, handle deleted."""
    handle = getattr(model, HANDLE_ATTR, None)
    if not isinstance(handle, WrapHandle):
        raise NotWrappedError("This model is not wrapped by tokenprune (nothing to unwrap).")
    handle._engine.remove()
    object.__delattr__(model, HANDLE_ATTR)
    return model


def handle_of(model: nn.Module) -> WrapHandle:
    """The `WrapHandle` of a wrapped model."""
    handle = getattr(model, HANDLE_ATTR, None)
    if not isinstance(handle, WrapHandle):
        raise NotWrappedError("This model is not wrapped by tokenprune; call tokenprune.wrap(model, ...) first.")
    return handle


@contextmanager
def pruned(model: nn.Module, strategy: str | Strategy = DEFAULT_STRATEGY, /, **options: Any) -> Iterator[WrapHandle]:
    """Context-manager form of `wrap`: the model is unwrapped when the block exits.

    Example:
        ```python
        with tokenprune.pruned(model, "pyramiddrop", ratio=0.5) as handle:
            model.generate(**inputs)
        print(handle.stats.flops_saved)
        ```
    """
    wrap(model, strategy, **options)
    handle = handle_of(model)
    try:
        yield handle
    finally:
        if handle.active:
            unwrap(model)
