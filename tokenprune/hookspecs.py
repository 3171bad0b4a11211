"""Plugin hook specifications: the contract between tokenprune and its plugins.

Built-in strategies and adapters use exactly these hooks, registered through the ``tokenprune``
entry-point group in ``pyproject.toml``, so a third-party package is a first-class citizen:

```toml
[project.entry-points.tokenprune]
mymethod = "tokenprune_mymethod"
```

Hooks are for discovery only; nothing calls pluggy inside a forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

import pluggy

if TYPE_CHECKING:
    from .adapters.base import Adapter
    from .adapters.encoder_base import EncoderAdapter
    from .config import StrategyConfig
    from .vision_language import BuiltStrategy

__all__ = [
    "hookspec",
    "hookimpl",
    "RegisterStrategy",
    "RegisterAdapter",
    "RegisterComponent",
    "ComponentKind",
    "RegisterEncoderAdapter",
]

hookspec = pluggy.HookspecMarker("tokenprune")
hookimpl = pluggy.HookimplMarker("tokenprune")


class RegisterStrategy(Protocol):
    """The ``register`` callback handed to `tokenprune_register_strategies`."""

    def __call__(
        self,
        name: str,
        config_cls: type[StrategyConfig],
        build: Callable[[StrategyConfig], BuiltStrategy],
        *,
        aliases: Sequence[str] = (),
        description: str = "",
    ) -> None: ...


ComponentKind = Literal["scheduler", "scorer", "reducer"]


class RegisterComponent(Protocol):
    """The ``register`` callback handed to `tokenprune_register_components`."""

    def __call__(
        self,
        kind: ComponentKind,
        name: str,
        config_cls: type[StrategyConfig],
        build: Callable[[Any], Any],
        *,
        description: str = "",
    ) -> None: ...


class RegisterAdapter(Protocol):
    """The ``register`` callback handed to `tokenprune_register_adapters`."""

    def __call__(self, adapter: Adapter) -> None: ...


class RegisterEncoderAdapter(Protocol):
    """The ``register`` callback handed to `tokenprune_register_encoder_adapters`."""

    def __call__(self, adapter: EncoderAdapter) -> None: ...


@hookspec
def tokenprune_register_strategies(register: RegisterStrategy) -> None:
    """Register token-reduction strategies.

    Call ``register(name, config_cls, build, aliases=(), description="")`` once per strategy.
    ``name`` is lowercase (``[a-z][a-z0-9_]*``) and unique across all plugins; ``config_cls`` is a
    `tokenprune.StrategyConfig` subclass that validates the user's options; ``build`` receives a
    validated config and returns a `tokenprune.Strategy` (one stack: the LLM, or a vision encoder)
    or a `tokenprune.VisionLanguageStrategy` (parts in the encoder, at the projector and/or in the
    LLM of one VLM), i.e. a `tokenprune.vision_language.BuiltStrategy`.
    """


@hookspec
def tokenprune_register_adapters(register: RegisterAdapter) -> None:
    """Register model adapters.

    Call ``register(adapter)`` with a `tokenprune.adapters.base.Adapter` instance. An adapter
    says *where* things are in one model family (decoder layers, visual token ids, rotary
    module); it never says what to do with them.
    """


@hookspec
def tokenprune_register_components(register: RegisterComponent) -> None:
    """Register reusable building blocks for mix-and-match strategies.

    Call ``register(kind, name, config_cls, build, description="")`` once per component. ``kind`` is
    ``"scheduler"``, ``"scorer"`` or ``"reducer"``; names are unique per kind; ``config_cls`` is a
    `tokenprune.StrategyConfig` subclass holding the component's options (option names should be
    distinct from other components' so that ``wrap(model, scorer=..., **options)`` can route them);
    ``build`` receives a validated config and returns a `Scheduler`, `Scorer` or `Reducer`.
    Users combine them by name: ``tokenprune.wrap(model, scheduler="pyramid", scorer="l2norm",
    reducer="topk", ratio=0.5)``.
    """


@hookspec
def tokenprune_register_encoder_adapters(register: RegisterEncoderAdapter) -> None:
    """Register vision-encoder adapters.

    Call ``register(adapter)`` with a `tokenprune.adapters.encoder_base.EncoderAdapter` instance.
    An encoder adapter says where a vision transformer's blocks are, how many prefix tokens it has
    and how a block computes its queries and keys; `tokenprune.wrap` uses it when the model is a
    vision encoder rather than a VLM.
    """
