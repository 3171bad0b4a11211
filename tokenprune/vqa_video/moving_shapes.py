"""Moving-Shapes: short seeded videos of moving shapes, with questions only time can answer.

A video has ``STEPS`` = 9 time steps of two raw frames each (18 frames at half-step intervals; a
Qwen2-VL temporal patch of 2 frames then covers one step, motion included), on a 48x48 px canvas. Three shapes (circle, square,
triangle) of three distinct colours each move in a straight line (left, right, up or down, 1.5 to
2.5 px per step). Events:

* shape **B** appears (hidden before step ``a``) or leaves (hidden from step ``a`` on), ``a`` in 2..7;
* shape **C** is hidden at 1, 2 or 3 non-adjacent steps among {1, 2, 3, 5, 6, 7};
* shape **A** is hidden at one step among {1, 2, 3, 5, 6, 7}, never together with C's first hiding.

Questions (one word answers):

| kind | question | answers | chance |
|---|---|---|---|
| ``direction`` | which way does the red shape move? | left, right, up, down | 25% |
| ``appear`` | does the red shape appear or leave? | appears, leaves | 50% |
| ``count`` | how many times is the red shape hidden? | one, two, three | 33% |
| ``order`` | which is hidden first, the red or the blue shape? | the colour named | 50% |

**One frame cannot answer.** The middle step (4) is the single-frame baseline's frame, and the
generator makes its content independent of every answer: every shape's position at step 4 is drawn
uniformly from the same central square whatever its direction (the path is built around it); A and C
are never hidden at step 4, so hiding times leave no trace there; B is visible at step 4 with
probability 1/2 whether it appears or leaves (``a`` in 2..4 vs 5..7). Every answer is balanced.

**Step counter (optional, ``render(video, counter=True)``).** Every frame then carries its step: one
pixel of the step's colour (`counter_colour`, nine hues) at the top-left corner of every 8x8 px cell,
i.e. in every visual token of the tiny model (``COUNTER_EVERY``). The stock Qwen2-VL tower attends
within one temporal patch and M-RoPE's time rotates only queries and keys, so without it a token's
value does not say when it was seen. The middle step's counter is the same in every video, so the
single-frame property below holds with it too. Videos, questions and answers are the same either way;
only the pixels differ. Off by default: the shipped model was trained and is evaluated without it
(its model card reports what a model trained with it reached).

Everything derives from ``numpy.random.default_rng(seed)``; the test split is ``split("test")``
(seed 1, 500 videos, 3000 questions), fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import colorsys

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "STEPS", "FRAMES_PER_STEP", "FRAME_PX", "MIDDLE_STEP", "COLORS", "SHAPES", "DIRECTIONS", "KINDS", "CHANCE",
    "Track", "Video", "Question", "make_video", "render", "questions", "split", "SPLIT_SEEDS", "cell_labels",
    "lookup_questions", "STEP_WORDS", "TRAINING_WORDS", "COUNTER_EVERY", "counter_colour",
]  # fmt: skip

STEPS = 9
"""Time steps of a video."""
FRAMES_PER_STEP = 2
"""Raw frames per step (one Qwen2-VL temporal patch)."""
FRAME_PX = 48
"""Side of a frame in pixels."""
MIDDLE_STEP = STEPS // 2
"""The step the single-frame baseline sees."""
COLORS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220),
    "yellow": (230, 200, 30), "purple": (150, 50, 190), "black": (20, 20, 20),
}  # fmt: skip
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
KINDS = ("direction", "appear", "count", "order")
CHANCE = {"direction": 0.25, "appear": 0.5, "count": 1 / 3, "order": 0.5}
"""Accuracy of a uniform guess among each kind's possible answers."""
HIDEABLE = (1, 2, 3, 5, 6, 7)
"""Steps at which A and C may be hidden (never the first, middle or last)."""
COUNTER_EVERY = 8
"""Spacing of the step counter's pixels (``render(..., counter=True)``): one at the top-left of every 8x8 px cell, i.e.
one in every visual token of the tiny model."""
MARGIN = 12  # >= 4.5 steps x 2.5 px: the path around the middle position stays on the canvas
SPLIT_SEEDS = {"train": 0, "test": 1}
SPLIT_SIZES = {"train": 20000, "test": 500}


@dataclass(frozen=True)
class Track:
    """One shape: what it is, where it is at the middle step, how it moves, when it is hidden."""

    shape: str
    color: str
    size: int
    middle: tuple[float, float]
    direction: str
    speed: float
    hidden: tuple[int, ...]

    def position(self, step: float) -> tuple[float, float]:
        """Centre ``(x, y)`` of the shape at time ``step`` (fractional steps fall between frames)."""
        dx, dy = DIRECTIONS[self.direction]
        t = (step - MIDDLE_STEP) * self.speed
        return self.middle[0] + dx * t, self.middle[1] + dy * t


@dataclass(frozen=True)
class Video:
    """Tracks A, B, C (in that order), B's event and the background."""

    tracks: tuple[Track, Track, Track]
    b_appears: bool
    background: tuple[int, int, int]


@dataclass(frozen=True)
class Question:
    kind: str
    text: str
    answer: str


def _non_adjacent(rng: np.random.Generator, k: int) -> tuple[int, ...]:
    while True:
        steps = sorted(rng.choice(HIDEABLE, size=k, replace=False).tolist())
        if all(b - a > 1 for a, b in zip(steps, steps[1:])):
            return tuple(steps)


def make_video(rng: np.random.Generator) -> Video:
    """One random video (see the module docstring for the rules)."""
    colors = rng.choice(list(COLORS), size=3, replace=False).tolist()
    b_appears = bool(rng.integers(2))
    a = int(rng.integers(2, 8))
    c_hidden = _non_adjacent(rng, int(rng.integers(1, 4)))
    a_hidden = (int(rng.choice([s for s in HIDEABLE if s != c_hidden[0]])),)
    b_hidden = tuple(range(a)) if b_appears else tuple(range(a, STEPS))
    tracks = []
    for color, hidden in zip(colors, (a_hidden, b_hidden, c_hidden)):
        size = int(rng.integers(8, 11))
        lo, hi = MARGIN, FRAME_PX - MARGIN - size
        tracks.append(Track(
            shape=SHAPES[int(rng.integers(len(SHAPES)))], color=color, size=size,
            middle=(float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))),
            direction=list(DIRECTIONS)[int(rng.integers(4))], speed=float(rng.uniform(1.5, 2.5)), hidden=hidden,
        ))  # fmt: skip
    background = tuple(int(v) for v in rng.integers(215, 256, size=3))
    return Video(tuple(tracks), b_appears, background)  # type: ignore[arg-type]


def _draw(draw: ImageDraw.ImageDraw, track: Track, time: float) -> None:
    x0, y0 = track.position(time)
    s = track.size - 1
    fill = COLORS[track.color]
    if track.shape == "circle":
        draw.ellipse((x0, y0, x0 + s, y0 + s), fill=fill)
    elif track.shape == "square":
        draw.rectangle((x0, y0, x0 + s, y0 + s), fill=fill)
    else:
        draw.polygon([(x0 + s / 2, y0), (x0, y0 + s), (x0 + s, y0 + s)], fill=fill)


def counter_colour(step: int) -> tuple[int, int, int]:
    """The step counter's colour at ``step``: nine hues around the colour wheel (saturated, mid-bright)."""
    r, g, b = colorsys.hsv_to_rgb(step / STEPS, 0.9, 0.85)
    return round(255 * r), round(255 * g), round(255 * b)


def _frame(video: Video, step: int, time: float, counter: bool = False) -> np.ndarray:
    image = Image.new("RGB", (FRAME_PX, FRAME_PX), video.background)
    draw = ImageDraw.Draw(image)
    for track in video.tracks:
        if step not in track.hidden:
            _draw(draw, track, time)
    frame = np.array(image)
    if counter:  # the step counter: one pixel of the step's colour at the top-left of every cell, drawn last
        frame[::COUNTER_EVERY, ::COUNTER_EVERY] = counter_colour(step)
    return frame


def render(video: Video, steps: list[int] | None = None, counter: bool = False) -> np.ndarray:
    """``(frames, 48, 48, 3)`` uint8 frames, two per step (``FRAMES_PER_STEP``).

    Raw frame ``f`` shows the shapes at time ``f / 2`` (the motion continues within a step, so a
    temporal patch of two frames holds motion); visibility follows the step ``f // 2``. ``steps``:
    show only these steps, each as its first frame repeated (``[MIDDLE_STEP] * STEPS`` is the
    single-frame baseline's input: the middle frame, still).
    """
    if steps is not None:
        return np.stack([_frame(video, s, float(s), counter) for s in steps for _ in range(FRAMES_PER_STEP)])
    frames = range(STEPS * FRAMES_PER_STEP)
    return np.stack([_frame(video, f // FRAMES_PER_STEP, f / FRAMES_PER_STEP, counter) for f in frames])


def questions(video: Video, rng: np.random.Generator) -> list[Question]:
    """Six questions: the direction of each shape, B's event, C's hiding count, A vs C's first hiding."""
    a, b, c = video.tracks
    out = [Question("direction", f"which way does the {t.color} shape move ?", t.direction) for t in video.tracks]
    out.append(Question("appear", f"does the {b.color} shape appear or leave ?", "appears" if video.b_appears else "leaves"))
    out.append(Question("count", f"how many times is the {c.color} shape hidden ?", ("one", "two", "three")[len(c.hidden) - 1]))
    first, second = (a, c) if rng.integers(2) else (c, a)
    earlier = a if a.hidden[0] < c.hidden[0] else c
    out.append(Question("order", f"which is hidden first , the {first.color} or the {second.color} shape ?", earlier.color))
    return out


@dataclass
class Split:
    """A split: ``videos[i]``, and questions with the index of their video."""

    videos: list[Video]
    questions: list[Question]
    video_index: list[int]

    def __len__(self) -> int:
        return len(self.questions)


def split(name: str, size: int | None = None) -> Split:
    """The ``"train"`` (seed 0) or ``"test"`` (seed 1, 500 videos) split; ``size`` videos (default: the split's)."""
    if name not in SPLIT_SEEDS:
        raise ValueError(f"Unknown split {name!r}; choose from {list(SPLIT_SEEDS)}.")
    rng = np.random.default_rng(SPLIT_SEEDS[name])
    videos, qs, index = [], [], []
    for i in range(SPLIT_SIZES[name] if size is None else size):
        video = make_video(rng)
        videos.append(video)
        for q in questions(video, rng):
            qs.append(q)
            index.append(i)
    return Split(videos, qs, index)


STEP_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
"""How `lookup_questions` name steps 0..8."""


def lookup_questions(video: Video, rng: np.random.Generator, n: int) -> list[Question]:
    """``n`` training-only questions "is the red shape visible at step four ?" (yes / no, balanced).

    They ask for one colour at one step: the colour x time lookup that ``count`` and ``order`` are
    built from. Never in the test split (`questions` makes those); the training script adds them.
    """
    out = []
    for _ in range(n):
        track = video.tracks[int(rng.integers(3))]
        want_visible = bool(rng.integers(2))
        steps = [s for s in range(STEPS) if (s not in track.hidden) == want_visible]
        step = int(rng.choice(steps))
        out.append(Question("lookup", f"is the {track.color} shape visible at step {STEP_WORDS[step]} ?",
                            "yes" if want_visible else "no"))  # fmt: skip
    return out


TRAINING_WORDS = ("visible", "at", "step", "yes", "no", *STEP_WORDS)
"""Words only the training-only questions use (`lookup_questions`, counts up to nine)."""


def vocabulary(training_words: bool = False) -> list[str]:
    """Every word the questions and answers use (sorted); ``training_words``: with `TRAINING_WORDS` too."""
    words = {"which", "way", "does", "the", "shape", "move", "?", "appear", "or", "leave", "how", "many", "times",
             "is", "hidden", "first", ",", "appears", "leaves", "one", "two", "three", *COLORS, *DIRECTIONS}  # fmt: skip
    return sorted(words | set(TRAINING_WORDS if training_words else ()))


def cell_labels(video: Video, cells: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """``(colour, direction)`` labels of every cell of a ``cells x cells`` grid at every step, ``(STEPS, cells, cells)`` each.

    The cell holds the topmost visible shape whose box covers the cell's centre at the step's middle
    time (``step + 0.25``): colour index 1..6 (0: background) and direction index 1..4 (0: none).
    Training targets for the tower's merged tokens (one per cell of a temporal patch); the training
    script uses them as an auxiliary loss only.
    """
    colour = np.zeros((STEPS, cells, cells), dtype=np.int64)
    direction = np.zeros_like(colour)
    centre = (np.arange(cells) + 0.5) * FRAME_PX / cells
    for step in range(STEPS):
        for track in video.tracks:  # later tracks are drawn on top
            if step in track.hidden:
                continue
            x0, y0 = track.position(step + 0.25)
            inside_x = (centre >= x0) & (centre <= x0 + track.size - 1)
            inside_y = (centre >= y0) & (centre <= y0 + track.size - 1)
            cover = inside_y[:, None] & inside_x[None, :]
            colour[step][cover] = list(COLORS).index(track.color) + 1
            direction[step][cover] = list(DIRECTIONS).index(track.direction) + 1
    return colour, direction
