"""Grid-Shapes: a seeded synthetic VQA set whose answers depend on one small image region.

Each 60x60 image is a 3x3 grid of 20 px cells; some cells hold a small shape (circle, square or
triangle) in one of six colours, drawn at a jittered spot inside its cell on a jittered light
background. Questions ask about one cell: "what color is the shape in the top left?", "what shape
is in the center?", "is there a shape in the bottom right?". Everything
derives from ``numpy.random.default_rng(seed)``, so a split is reproducible bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["COLORS", "SHAPES", "POSITIONS", "IMAGE_PX", "GridScene", "make_scene", "questions", "render"]

IMAGE_PX = 60
"""Side of the square images in pixels (the tiny VQA model's input size: 10x10 patches of 6 px)."""
CELL_PX = IMAGE_PX // 3  # 20 px cells
COLORS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220),
    "yellow": (230, 200, 30), "purple": (150, 50, 190), "black": (20, 20, 20),
}  # fmt: skip
"""Colour name (the answer word) -> RGB fill of the shape."""
SHAPES = ("circle", "square", "triangle")
"""Shape names, the answers to "what shape is in the ...?"."""
POSITIONS = (
    "top left", "top middle", "top right",
    "middle left", "center", "middle right",
    "bottom left", "bottom middle", "bottom right",
)  # fmt: skip
"""The nine cells in row-major order, as the questions name them (cell ``i`` of `GridScene.cells`)."""


@dataclass(frozen=True)
class GridScene:
    """Cell ``i`` (row-major) holds ``(shape, colour, dx, dy, size)`` or ``None``."""

    cells: tuple[tuple[str, str, int, int, int] | None, ...]
    background: tuple[int, int, int]


def make_scene(rng: np.random.Generator) -> GridScene:
    """Two to five occupied cells with random shapes, colours, offsets and sizes."""
    occupied = set(rng.choice(9, size=int(rng.integers(2, 6)), replace=False).tolist())
    cells = []
    for i in range(9):
        if i not in occupied:
            cells.append(None)
            continue
        size = int(rng.integers(11, 16))
        slack = CELL_PX - size
        cells.append((
            SHAPES[int(rng.integers(len(SHAPES)))], list(COLORS)[int(rng.integers(len(COLORS)))],
            int(rng.integers(0, slack + 1)), int(rng.integers(0, slack + 1)), size,
        ))  # fmt: skip
    background = tuple(int(v) for v in rng.integers(215, 256, size=3))
    return GridScene(tuple(cells), background)  # type: ignore[arg-type]


def render(scene: GridScene) -> Image.Image:
    """The scene as a 60x60 RGB image."""
    image = Image.new("RGB", (IMAGE_PX, IMAGE_PX), scene.background)
    draw = ImageDraw.Draw(image)
    for i, cell in enumerate(scene.cells):
        if cell is None:
            continue
        shape, colour, dx, dy, size = cell
        x0, y0 = (i % 3) * CELL_PX + dx, (i // 3) * CELL_PX + dy
        box = (x0, y0, x0 + size - 1, y0 + size - 1)
        fill = COLORS[colour]
        if shape == "circle":
            draw.ellipse(box, fill=fill)
        elif shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(x0 + (size - 1) / 2, y0), (x0, y0 + size - 1), (x0 + size - 1, y0 + size - 1)], fill=fill)
    return image


def questions(scene: GridScene, rng: np.random.Generator, k: int = 4) -> list[tuple[str, str]]:
    """``k`` distinct (question, answer) pairs about ``scene``: a kind is drawn uniformly first
    (colour at a cell, shape at a cell, is a cell occupied), then a question of it.

    Every answer depends on one 20x20 cell, i.e. about 11 of the 100 patches (counting questions, which
    need the whole image, were tried and dropped: the CPU training budget could not learn them).
    """
    kinds: dict[str, list[tuple[str, str]]] = {"color": [], "shape": [], "occupied": []}
    for i, cell in enumerate(scene.cells):
        where = POSITIONS[i]
        if cell is None:
            kinds["occupied"].append((f"is there a shape in the {where}?", "no"))
            continue
        shape, colour = cell[0], cell[1]
        kinds["color"].append((f"what color is the shape in the {where}?", colour))
        kinds["shape"].append((f"what shape is in the {where}?", shape))
        kinds["occupied"].append((f"is there a shape in the {where}?", "yes"))
    picked: list[tuple[str, str]] = []
    names = list(kinds)
    while len(picked) < k and any(kinds.values()):
        pool = kinds[names[int(rng.integers(len(names)))]]
        if pool:
            picked.append(pool.pop(int(rng.integers(len(pool)))))
    return picked
