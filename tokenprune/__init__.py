"""tokenprune: visual-token reduction for vision-language models.

```python
import tokenprune
model = tokenprune.wrap(model, "pyramiddrop")   # same model, fewer visual tokens in deeper layers
model.generate(**inputs)
model.tokenprune.stats                          # tokens per layer, FLOPs saved
tokenprune.unwrap(model)
```
"""

from .api import WrapHandle, handle_of, pruned, unwrap, wrap
from .vision_language import ProjectorSelection, VisionLanguageStrategy
from .config import StrategyConfig
from .engine import CallStats
from .errors import (
    AlreadyWrappedError,
    NotWrappedError,
    IncompatibleComponentsError,
    RegistrationError,
    ScheduleError,
    TokenpruneError,
    UnknownComponentError,
    UnknownStrategyError,
    UnsupportedFeatureError,
    UnsupportedModelError,
)
from .hookspecs import hookimpl
from .interfaces import Reducer, Reduction, Schedule, Scheduler, ScoreContext, Scorer, Strategy
from .registry import get_registry

__version__ = "0.1.0"

__all__ = [
    "wrap",
    "unwrap",
    "pruned",
    "handle_of",
    "WrapHandle",
    "CallStats",
    "Strategy",
    "Scheduler",
    "Scorer",
    "Reducer",
    "Schedule",
    "ScoreContext",
    "Reduction",
    "StrategyConfig",
    "hookimpl",
    "get_registry",
    "list_strategies",
    "TokenpruneError",
    "UnknownStrategyError",
    "UnsupportedModelError",
    "AlreadyWrappedError",
    "NotWrappedError",
    "ScheduleError",
    "UnsupportedFeatureError",
    "RegistrationError",
    "IncompatibleComponentsError",
    "UnknownComponentError",
    "list_components",
]
__all__ += ["VisionLanguageStrategy", "ProjectorSelection"]


def list_strategies() -> list[str]:
    """Names of every registered strategy."""
    return sorted(get_registry().strategies)


def list_components() -> dict[str, list[str]]:
    """Names of every registered scheduler, scorer and reducer, by kind."""
    return {kind: sorted(specs) for kind, specs in get_registry().components.items()}
