"""One strategy over both stacks of a VLM: the vision encoder and the LLM.

Half of the field reduces tokens before or inside the vision encoder (ToMe, VisionZip, FasterVLM),
the other half inside the LLM (PyramidDrop, FastV); users combine them. A
`VisionLanguageStrategy` holds up to three parts, each optional:

* ``encoder``: a `Strategy` applied between the vision tower's blocks (its layers are block indices);
* ``projector``: a `ProjectorSelection` applied to the features the tower hands to the projector;
* ``llm``: a `Strategy` applied inside the LLM, as ``tokenprune.wrap(model, strategy)`` would.

Example (VisionZip-style selection to 50% at the projector, then PyramidDrop in the LLM):

```python
from tokenprune import ProjectorSelection, VisionLanguageStrategy, get_registry
from tokenprune.components import QueryAttentionScorer, TopKDrop

strategy = VisionLanguageStrategy(
    projector=ProjectorSelection(0.5, QueryAttentionScorer(), TopKDrop()),   # [CLS] attention
    llm=get_registry().build("pyramiddrop", ratio=0.5),
)
tokenprune.wrap(model, strategy)
```
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ScheduleError
from .interfaces import Reducer, Scheduler, Scorer, Strategy, check_sites, require_site

__all__ = ["ProjectorSelection", "VisionLanguageStrategy", "BuiltStrategy", "runs_in_llm_only"]


@dataclass(frozen=True)
class ProjectorSelection:
    """Reduce the tower's output features before the projector, every image to the same count.

    Scores come from the tower block that would read these features next (its own norm and q/k
    projections): with `QueryAttentionScorer` that is [CLS] attention (FasterVLM, VisionZip's
    dominant tokens); `ReceivedAttentionScorer` for towers without [CLS].

    Attributes:
        ratio: share of the ORIGINAL patch tokens of an image that reach the projector, in (0, 1].
        scorer: which tokens matter.
        reducer: what happens to the rest (`TopKDrop`, `SimilarityMerge`, ...).
    """

    ratio: float
    scorer: Scorer
    reducer: Reducer

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio <= 1.0:
            raise ScheduleError(f"ProjectorSelection ratio {self.ratio} is outside (0, 1].")
        sites = check_sites(self.scorer, self.reducer)
        require_site(sites, "projector", f"ProjectorSelection({self.scorer!r}, {self.reducer!r})", "at the projector")

    def kept_count(self, tokens: int, grid: tuple[int, int, int] | None = None) -> int:
        """Tokens one image of ``tokens`` (merged ``(frames, rows, cols)`` ``grid``, where known) keeps.

        ``max(1, int(tokens * ratio))``; a subclass may make it depend on the grid (temporal
        selections keep still images whole and count per frame, `tokenprune.components.temporal`).
        """
        return min(tokens, max(1, int(tokens * self.ratio)))


@dataclass(frozen=True)
class VisionLanguageStrategy:
    """Reduction in the vision encoder and/or at the projector and/or in the LLM of one VLM.

    Attributes:
        llm: the LLM-side strategy (``None``: the LLM sees every token the projector gives it).
        encoder: reduction between the vision tower's blocks (``None``: none).
        projector: reduction of the tower's output features (``None``: none).
        name: for messages and stats.
    """

    llm: Strategy | None = None
    encoder: Strategy | None = None
    projector: ProjectorSelection | None = None
    name: str = "vision+llm"

    def __post_init__(self) -> None:
        if self.llm is None and self.encoder is None and self.projector is None:
            raise ScheduleError("A VisionLanguageStrategy needs at least one of llm, encoder or projector.")
        if self.llm is not None:
            require_site(self.llm.sites, "llm", f"The llm part {self.llm.name!r}", "in the LLM")
        if self.encoder is not None:
            require_site(self.encoder.sites, "encoder", f"The encoder part {self.encoder.name!r}", "in the vision encoder")

    @property
    def positions(self) -> str:
        """Rotary-position policy of the LLM part (``"keep"`` when there is none)."""
        return self.llm.positions if self.llm is not None else "keep"

    @property
    def scheduler(self) -> Scheduler | None:
        """The LLM-side scheduler (what `WrapHandle.plan` reports)."""
        return self.llm.scheduler if self.llm is not None else None

    @property
    def config(self):
        """The LLM part's validated config, if any (what `WrapHandle.config` reports)."""
        return self.llm.config if self.llm is not None else None


BuiltStrategy = Strategy | VisionLanguageStrategy
"""What a registered strategy's ``build`` returns and `tokenprune.wrap` accepts: a `Strategy` (one
stack) or a `VisionLanguageStrategy` (encoder, projector and/or LLM parts)."""


def runs_in_llm_only(strategy: BuiltStrategy) -> bool:
    """True when ``strategy`` removes tokens only inside the LLM (what the cost model and benchmark cover).

    False for a `VisionLanguageStrategy` with an encoder or projector part, and for a `Strategy` that
    cannot act in the LLM (ToMe: `tokenprune.wrap` runs it in the vision tower).
    """
    if isinstance(strategy, VisionLanguageStrategy):
        return strategy.encoder is None and strategy.projector is None
    return "llm" in strategy.sites
