"""The public entry points: `wrap`, `unwrap`, `pruned` and the `WrapHandle`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from .engine import CallStats, Engine
from .vision_language import VisionLanguageStrategy
from .containers import reject_parallel_container
from .encoder import EncoderEngine
from .encoder.vlm import CompositeEngine
from .engine.runtime import check_attention
from .errors import AlreadyWrappedError, NotWrappedError, UnsupportedFeatureError
from .interfaces import Strategy, require_site
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

    def __init__(self, model: nn.Module, strategy: Strategy, adapter_name: str, engine: Engine | EncoderEngine):
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
        """Number of decoder layers of the wrapped model."""
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

    def tokens_per_layer(self) -> dict[str, Any]:
        """Visual tokens per layer of the last forward, across both stacks of a VLM.

        ``{"vision": [block][image] or None, "projector": [image] or None, "llm": [layer][sample] or None}``.
        For a plain LLM-side strategy only ``"llm"`` is set; for a wrapped vision encoder only ``"vision"``.
        """
        per_layer = getattr(self._engine, "tokens_per_layer", None)
        if per_layer is not None:
            return per_layer()
        stats = self.stats
        tokens = None if stats is None else stats.visual_tokens
        if isinstance(self._engine, EncoderEngine):
            return {"vision": tokens, "projector": None, "llm": None}
        return {"vision": None, "projector": None, "llm": tokens}

    def input_columns(self) -> Any:
        """``(B, W)`` for encoder-side reduction in a VLM: the original ``input_ids`` column of every
        column the last prefill ran on (``-1`` for a padding slot added when rows shrank unequally),
        or ``None`` when no placeholder was removed."""
        compaction = getattr(self._engine, "compaction", None)
        return None if compaction is None else compaction.idx

    def token_sizes(self) -> Any:
        """``(B, n)`` how many input tokens each output token of the last forward stands for, when a
        merging reducer ran in a vision encoder (``None`` otherwise: every token stands for itself)."""
        sizes = getattr(self._engine, "sizes", None)
        return sizes() if sizes is not None else None

    def compile_selection(self, backend: str = "inductor", mode: str | None = None) -> WrapHandle:
        """Compile the selection step of every reduction layer (score, choose, gather) with ``torch.compile``.

        Worth it where the hooks are launch-bound (a GPU at a few hundred visual tokens): the step's
        sixty-odd small operations become a few fused kernels. One graph with dynamic shapes serves
        every reduction layer, batch and prompt length; the first prefill pays the compile. The
        model itself stays eager (see "Engine modes" in the docs for compiling it). Kept tokens
        equal eager mode's unless two scores tie within the last bit of rounding.

        Args:
            backend: the ``torch.compile`` backend (``"inductor"``; ``"eager"`` only traces, for debugging).
            mode: the ``torch.compile`` mode (e.g. ``"max-autotune-no-cudagraphs"``); ``None``: default.

        Returns:
            This handle (``model.tokenprune.compile_selection()`` chains).

        Raises:
            UnsupportedFeatureError: the wrap reduces no tokens inside the LLM (a vision encoder on its
                own, or a strategy without an LLM part).
        """
        llm = self._engine if isinstance(self._engine, Engine) else getattr(self._engine, "llm", None)
        if llm is None:
            raise UnsupportedFeatureError(
                f"compile_selection compiles the LLM's reduction layers, and this wrap ({self.strategy.name!r} on "
                f"{type(self.model).__name__}) reduces no tokens inside an LLM. Leave it out here."
            )
        llm.compile_selection(backend, mode)
        return self

    @property
    def active(self) -> bool:
        """Whether the hooks are still attached (False after `unwrap` or `remove`)."""
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


def _resolve_strategy(strategy: str | Strategy | VisionLanguageStrategy, options: dict[str, Any]) -> Any:
    if any(key in options for key in COMPONENT_OPTIONS):
        if strategy is not DEFAULT_STRATEGY:
            raise TypeError(
                f"Give either a strategy (got {_describe(strategy)}) or "
                "components (scheduler=, scorer=, reducer=), not both: components compose a strategy of their own."
            )
        return get_registry().compose(**options)
    if isinstance(strategy, (Strategy, VisionLanguageStrategy)):
        if options:
            raise TypeError(
                f"Options {sorted(options)} were given with a Strategy object; options configure a strategy "
                "by name only (e.g. wrap(model, 'pyramiddrop', ratio=0.5))."
            )
        return strategy
    if isinstance(strategy, str):
        return get_registry().build(strategy, **options)
    raise TypeError(f"strategy must be a registered name or a tokenprune.Strategy, got {type(strategy).__name__}.")


def _inner_model(model: nn.Module) -> nn.Module:
    """The transformers model inside a fine-tuning container, else ``model`` itself.

    A PEFT ``PeftModel`` (and anything else following its ``get_base_model()`` protocol) holds the
    transformers model whose modules, config and ``loss_function`` the engine hooks into; the
    container forwards attribute reads to it, so ``container.tokenprune`` still finds the handle.
    """
    get_base = getattr(type(model), "get_base_model", None)
    if callable(get_base):
        inner = model.get_base_model()
        if isinstance(inner, nn.Module) and inner is not model:
            return _inner_model(inner)
    return model


def wrap(model: nn.Module, strategy: str | Strategy | VisionLanguageStrategy = DEFAULT_STRATEGY, /, **options: Any) -> nn.Module:
    """Attach a token-reduction strategy to ``model`` and return the same model.

    Args:
        model: a supported transformers VLM, or a vision encoder (timm or open_clip
            ``VisionTransformer``, transformers ``CLIPVisionModel`` / ``SiglipVisionModel``), in which
            case the strategy's layers are block indices and tokens are reduced between blocks
            (``tokenprune list`` shows the adapters).
        strategy: a registered strategy name (e.g. ``"pyramiddrop"``, the default), a `Strategy`
            object, or a `VisionLanguageStrategy` (encoder + projector + LLM parts). Leave it out and
            pass ``scheduler=``, ``scorer=`` and/or ``reducer=`` (registered component names) to
            compose a strategy instead.
        **options: the strategy's (or the components') config options, validated before anything is
            attached.

    Returns:
        ``model`` itself, with removable hooks and its `WrapHandle` at ``model.tokenprune``. A PEFT
        model (anything with ``get_base_model()``) is hooked at its base transformers model, and
        ``model.tokenprune`` reaches the handle through the container.

    Raises:
        UnknownStrategyError: the name is not registered (the message lists the known ones).
        pydantic.ValidationError: an option is invalid.
        UnsupportedModelError: no adapter handles the model (the message lists supported types), or
            the model is inside a DDP / DataParallel / FSDP1 container (wrap the model first).
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
    reject_parallel_container(model)
    outer, model = model, _inner_model(model)
    if isinstance(getattr(model, HANDLE_ATTR, None), WrapHandle):
        raise AlreadyWrappedError(
            f"This model is already wrapped with {model.tokenprune.strategy.name!r}; call tokenprune.unwrap(model) first."
        )
    resolved = _resolve_strategy(strategy, options)
    encoder = get_registry().encoder_adapter_for(model)
    if encoder is not None:  # a vision encoder on its own (timm, open_clip, a transformers tower)
        if not isinstance(resolved, Strategy):
            raise TypeError(
                f"{type(model).__name__} is a vision encoder on its own; a VisionLanguageStrategy needs a VLM. Pass "
                "its encoder part (a Strategy) instead."
            )
        require_site(resolved.sites, "encoder", f"The strategy {resolved.name!r}", f"inside {type(model).__name__}")
        encoder.check(model)
        encoder_engine = EncoderEngine(model, encoder, resolved)
        encoder_engine.install()
        object.__setattr__(model, HANDLE_ATTR, WrapHandle(model, resolved, encoder.name, encoder_engine))
        return model
    adapter = get_registry().adapter_for(model)
    adapter.check(model)
    if resolved.positions == "compact" and not adapter.supports_compact_positions:
        raise UnsupportedFeatureError(
            f"positions='compact' is undefined for {type(model).__name__}: its rotary positions are not 1-D. "
            "Use positions='keep' (every kept token keeps its original position)."
        )
    if isinstance(resolved, Strategy) and "llm" not in resolved.sites:
        # An encoder-only strategy (ToMe) on a VLM means: reduce inside the VLM's vision tower.
        require_site(resolved.sites, "encoder", f"The strategy {resolved.name!r}", f"in {type(model).__name__}")
        resolved = VisionLanguageStrategy(encoder=resolved, name=resolved.name)
    if isinstance(resolved, VisionLanguageStrategy):
        encoder_adapter = None
        vision = adapter.vision_tower(model) if resolved.encoder is not None or resolved.projector is not None else None
        if vision is not None and vision.projector is None:  # reduction reaches into the tower
            tower = vision.tower
            encoder_adapter = get_registry().encoder_adapter_for(tower)
            if encoder_adapter is None:
                raise UnsupportedFeatureError(
                    f"No vision-encoder adapter handles {type(tower).__name__}, the tower of {type(model).__name__}; "
                    "use LLM-side reduction only (VisionLanguageStrategy(llm=...))."
                )
        engine: Any = CompositeEngine(model, adapter, encoder_adapter, resolved)
    else:
        engine = Engine(model, adapter, resolved)
    check_attention(engine.stack.attn_implementation)
    engine.install()
    object.__setattr__(model, HANDLE_ATTR, WrapHandle(model, resolved, adapter.name, engine))
    return outer


def unwrap(model: nn.Module) -> nn.Module:
    """Detach the strategy from ``model``: hooks removed, loss function restored, handle deleted."""
    handle = getattr(model, HANDLE_ATTR, None)
    if not isinstance(handle, WrapHandle):
        raise NotWrappedError("This model is not wrapped by tokenprune (nothing to unwrap).")
    handle._engine.remove()
    object.__delattr__(handle.model, HANDLE_ATTR)
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
