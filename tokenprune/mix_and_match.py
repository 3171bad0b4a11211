"""Mix and match: a strategy built from a scheduler, a scorer and a reducer registered by name.

```python
tokenprune.wrap(model, scheduler="pyramid", scorer="l2norm", reducer="topk", ratio=0.5)
```

Each option goes to the component whose config declares it; an option no chosen component knows is
an error naming the valid ones, and components that cannot work together (different sites) fail
here, before any hook is attached.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from .config import StrategyConfig
from .interfaces import Reducer, Scheduler, Scorer, Strategy, check_sites

if TYPE_CHECKING:
    from .vision_language import VisionLanguageStrategy
    from .registry import Registry

__all__ = ["ComposedConfig", "compose", "COMPONENT_KINDS", "DEFAULTS"]

COMPONENT_KINDS = ("scheduler", "scorer", "reducer")
"""The three kinds of component a strategy is composed of (the keyword names of `compose`)."""
DEFAULTS = {"scheduler": "pyramid", "scorer": "attention", "reducer": "topk"}
"""What a composed strategy uses for a kind the user did not name."""
_BASES = {"scheduler": Scheduler, "scorer": Scorer, "reducer": Reducer}


class ComposedConfig(StrategyConfig):
    """The configuration of a strategy composed by name (recorded on the handle, JSON round-trips)."""

    scheduler: str
    scorer: str
    reducer: str
    positions: Literal["keep", "compact"] = "keep"
    scheduler_options: dict[str, Any] = Field(default_factory=dict)
    scorer_options: dict[str, Any] = Field(default_factory=dict)
    reducer_options: dict[str, Any] = Field(default_factory=dict)


def compose(
    registry: Registry,
    scheduler: str | None = None,
    scorer: str | None = None,
    reducer: str | None = None,
    positions: Literal["keep", "compact"] = "keep",
    **options: Any,
) -> Strategy | VisionLanguageStrategy:
    """Build a `Strategy` from registered component names, routing ``options`` to their configs.

    Components that share only the ``"projector"`` site (``scheduler="projector"``) give a
    `VisionLanguageStrategy` with that `ProjectorSelection` instead.

    Raises:
        tokenprune.errors.UnknownComponentError: a name is not registered (the message lists the known ones).
        TypeError: an option that none of the chosen components accepts (the message lists the valid ones).
        pydantic.ValidationError: an option value is invalid.
        IncompatibleComponentsError: the components act at different sites.
    """
    names = {"scheduler": scheduler, "scorer": scorer, "reducer": reducer}
    names = {kind: name or DEFAULTS[kind] for kind, name in names.items()}
    specs = {kind: registry.component(kind, name) for kind, name in names.items()}
    routed: dict[str, dict[str, Any]] = {kind: {} for kind in COMPONENT_KINDS}
    unknown = []
    for key, value in options.items():
        owners = [kind for kind, spec in specs.items() if key in spec.config_cls.model_fields]
        if not owners:
            unknown.append(key)
        for kind in owners:
            routed[kind][key] = value
    if unknown:
        valid = sorted({f for spec in specs.values() for f in spec.config_cls.model_fields} | {"positions"})
        chosen = ", ".join(f"{kind}={names[kind]!r}" for kind in COMPONENT_KINDS)
        raise TypeError(
            f"Unknown option(s) {', '.join(map(repr, unknown))} for the components {chosen}. "
            f"Valid options: {', '.join(valid) or '(none)'}."
        )
    built = {}
    for kind, spec in specs.items():
        obj = spec.build(spec.config_cls(**routed[kind]))
        if not isinstance(obj, _BASES[kind]):
            raise TypeError(
                f"The {kind} {spec.name!r} from {spec.source} built a {type(obj).__name__}, not a {_BASES[kind].__name__}."
            )
        built[kind] = obj
    config = ComposedConfig(
        **names,
        positions=positions,
        scheduler_options=routed["scheduler"],
        scorer_options=routed["scorer"],
        reducer_options=routed["reducer"],
    )
    name = "+".join(names[kind] for kind in COMPONENT_KINDS)
    sites = check_sites(built["scheduler"], built["scorer"], built["reducer"])
    if sites == {"projector"}:  # one reduction of the tower's features, no layers
        from .vision_language import ProjectorSelection, VisionLanguageStrategy

        ratio = getattr(built["scheduler"], "ratio", None)
        if not isinstance(ratio, float):
            raise TypeError(
                f"The projector-site scheduler {names['scheduler']!r} has no float `ratio` (the share of each image's "
                "patches kept), which a projector-side selection needs; give its class a `ratio` attribute."
            )
        selection = ProjectorSelection(ratio, built["scorer"], built["reducer"])
        return VisionLanguageStrategy(projector=selection, name=name)
    return Strategy(built["scheduler"], built["scorer"], built["reducer"], positions=positions, name=name, config=config)
