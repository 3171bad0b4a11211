"""Temporal reduction of a video's tokens before the LLM: the shared frame bookkeeping.

A video reaches the LLM as ``frames x rows x cols`` merged tokens in raster order (Qwen2-VL /
Qwen2.5-VL: one "frame" is a temporal patch of ``temporal_patch_size`` raw frames; LLaVA-OneVision:
one frame's 2x2-pooled grid, the video's newline feature after the grid). Temporal
methods compare tokens across frames, so they need that grid: `ScoreContext.grid`, which the
packed projector-side selection (`tokenprune.encoder.packed`) sets for every image and video.

* `TemporalReducer`: a projector-side reducer that reads the candidates as frames (`frames_of`)
  and states its own kept count as a pure function of the grid and the kept share
  (`TemporalReducer.kept_count`), so a serving engine can size the prompt before encoding.
* `TemporalSelection`: the `ProjectorSelection` that uses that count for videos and leaves still
  images (one frame) whole, so a batch mixing images and videos reduces only the videos.

A temporal reducer handed a still image (one frame, or a vision side without a frame grid such as
LLaVA-1.5's) raises `TemporalInputError` naming the problem.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

from torch import Tensor

from ..vision_language import ProjectorSelection
from ..errors import ScheduleError, UnsupportedFeatureError
from ..interfaces import Reducer, ScoreContext

__all__ = ["TemporalInputError", "TemporalReducer", "TemporalSelection", "frames_of"]


class TemporalInputError(UnsupportedFeatureError):
    """A temporal strategy got a still image (or a model whose vision side has no frame grid)."""


def frames_of(ctx: ScoreContext, count: int, what: str) -> tuple[int, int, int]:
    """``(frames, rows, cols)`` of the ``count`` candidates of one video, checked.

    Raises:
        TemporalInputError: the context has no grid (the model's vision side does not give frames)
            or the grid has a single frame (a still image).
        ScheduleError: the grid does not hold ``count`` tokens.
    """
    grid = getattr(ctx, "grid", None)
    if grid is None:
        raise TemporalInputError(
            f"{what} compares tokens across video frames, but this model's vision side gives no frame grid (a still "
            "image). Temporal strategies run on Qwen2-VL / Qwen2.5-VL and LLaVA-OneVision videos (pixel_values_videos); "
            "for images use "
            "a spatial strategy (divprune, visionzip, pooling) or an LLM-side one (pyramiddrop)."
        )
    frames, rows, cols = (int(x) for x in grid)
    if frames < 2:
        raise TemporalInputError(
            f"{what} needs at least two frames (temporal patches) but got a still image ({rows}x{cols} tokens). "
            "TemporalSelection leaves still images whole; pass videos with >= 2 * temporal_patch_size frames."
        )
    if frames * rows * cols != count:
        raise ScheduleError(f"The context's grid {(frames, rows, cols)} holds {frames * rows * cols} tokens, not the {count} candidates.")
    return frames, rows, cols


class TemporalReducer(Reducer):
    """A projector-side reducer over the frames of one video, with a grid-determined kept count."""

    sites = frozenset({"projector"})

    @abstractmethod
    def kept_count(self, grid: tuple[int, int, int], ratio: float) -> int:
        """Tokens a video of merged grid ``(frames, rows, cols)`` keeps at kept share ``ratio``."""

    def candidates_of(self, candidates: Tensor, b: int) -> Tensor:
        """Slot indices of row ``b``'s candidates (a whole video, in raster order)."""
        return candidates[b].nonzero()[:, 0]


@dataclass(frozen=True)
class TemporalSelection(ProjectorSelection):
    """Projector-side selection of each video's tokens by a `TemporalReducer`; still images pass whole.

    Attributes:
        ratio: the kept share the reducer's count rule reads (``1.0`` keeps everything).
        scorer: usually `NullScorer` (temporal reducers score by themselves).
        reducer: a `TemporalReducer`.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.reducer, TemporalReducer):
            raise ScheduleError(f"TemporalSelection needs a TemporalReducer, not {self.reducer!r}.")

    def kept_count(self, tokens: int, grid: tuple[int, int, int] | None = None) -> int:
        """The reducer's count for a video; every token of a still image (or where the grid is unknown)."""
        if grid is None or int(grid[0]) < 2 or self.ratio >= 1.0:
            return tokens
        kept = self.reducer.kept_count(tuple(int(x) for x in grid), self.ratio)  # type: ignore[attr-defined]
        return min(tokens, kept)
