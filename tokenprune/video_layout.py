"""What a video prompt is, and the token grid a model makes of it.

`VideoShape` is the video as the user has it (frames and their size); `VideoGrid` is what the
language model receives from it. Which grid a shape becomes is family knowledge, so the adapters
compute it from a model's config (`tokenprune.adapters.base.Adapter.video_grid`); the cost model
(`tokenprune.video_cost`) and the benchmarks read it from there.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["VideoGrid", "VideoShape"]


@dataclass(frozen=True)
class VideoShape:
    """A video as the user has it: raw frames and their size in pixels.

    Attributes:
        frames: raw frames sampled from the video.
        height, width: frame size in pixels (before the processor's resizing).
        temporal_patch: frames per temporal patch (``None``: the family's own; Qwen 2, OneVision 1).
    """

    frames: int
    height: int
    width: int
    temporal_patch: int | None = None

    def __post_init__(self) -> None:
        for name in ("frames", "height", "width"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"VideoShape.{name} must be a positive integer, got {getattr(self, name)!r}.")
        if self.temporal_patch is not None and self.temporal_patch < 1:
            raise ValueError(f"VideoShape.temporal_patch must be >= 1, got {self.temporal_patch}.")

    @classmethod
    def parse(cls, text: str) -> VideoShape:
        """``"32x448x448"`` (frames x height x width) or ``"32x448x448x2"`` (and a temporal patch)."""
        parts = text.lower().replace(",", "x").split("x")
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            numbers = []
        if len(numbers) not in (3, 4):
            raise ValueError(
                f"Video shape {text!r}: write FRAMESxHEIGHTxWIDTH (e.g. 32x448x448) or FRAMESxHEIGHTxWIDTHxTEMPORAL_PATCH."
            )
        return cls(*numbers)


@dataclass(frozen=True)
class VideoGrid:
    """What the LLM receives from one video: a ``frames x rows x cols`` token grid plus ``extra`` tokens.

    Attributes:
        frames, rows, cols: the merged token grid (``frames`` = temporal patches).
        extra: tokens outside the grid (OneVision's newline feature).
        encoder_sequences: the vision encoder's sequence lengths (one per frame or temporal patch).
        projector_tokens: tokens the projector runs on (before OneVision's pooling).
    """

    frames: int
    rows: int
    cols: int
    extra: int
    encoder_sequences: tuple[int, ...]
    projector_tokens: int

    @property
    def grid(self) -> tuple[int, int, int]:
        """``(frames, rows, cols)`` of merged tokens."""
        return self.frames, self.rows, self.cols

    @property
    def tokens(self) -> int:
        """LLM visual tokens of the video."""
        return self.frames * self.rows * self.cols + self.extra
