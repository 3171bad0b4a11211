"""Per-image attribute labels (shape and colour) for pretraining the tiny model's vision tower.

A from-scratch ViT trained only through the language model's answer loss learns colour (a linear
function of the pixels) but not shape: after a CPU hour its shape answers stayed at chance. LLaVA
starts from a pretrained CLIP tower; the tiny model gets the same head start from a short
supervised stage on the training images, whose labels this module derives from the training data
itself (no test data is read):

- easy-VQA: one shape per image. Its shape and colour are read from the image's own questions
  ("what shape is in the image?" -> answer; "what color is the circle?" -> the shape word ...).
- Grid-Shapes: the generator's scenes (`tokenprune.tools.vqa.datasets.grid_scenes`) give every cell's
  shape and colour, or "empty".

Labels are class indices into `EASY_SHAPES` / `EASY_COLORS` and `GRID_SHAPES` / `GRID_COLORS`;
-1 marks an unknown label (ignored by the loss).
"""

from __future__ import annotations

import re

import torch

from . import grid_shapes
from .datasets import Split, grid_scenes

__all__ = [
    "EASY_SHAPES", "EASY_COLORS", "GRID_SHAPES", "GRID_COLORS", "easy_vqa_attributes", "grid_attributes",
    "cell_of_patches", "yes_no_templates", "balanced_yes_no",
]  # fmt: skip

EASY_SHAPES = ("circle", "rectangle", "triangle")
"""easy-VQA's shapes (class indices of `easy_vqa_attributes`)."""
EASY_COLORS = ("red", "green", "blue", "black", "gray", "yellow", "teal", "brown")
"""easy-VQA's colours (class indices of `easy_vqa_attributes`)."""
GRID_SHAPES = ("empty", *grid_shapes.SHAPES)
"""A Grid-Shapes cell's content class: index 0 is an empty cell."""
GRID_COLORS = ("empty", *grid_shapes.COLORS)
"""A Grid-Shapes cell's colour class: index 0 is an empty cell."""

_SHAPE_WORD = re.compile(r"\b(" + "|".join(EASY_SHAPES) + r")\b")
_COLOR_WORD = re.compile(r"\b(" + "|".join(EASY_COLORS) + r")\b")


def easy_vqa_attributes(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """``(shape, colour)`` class index per image of an easy-VQA split (``-1`` where no question tells).

    Only the questions whose answer or wording names the attribute outright are read: a shape
    question's answer is the shape, a colour question about "the circle" names the shape, and
    "what is the red shape?" names the colour. Yes/no questions are not read.
    """
    n = len(split.images)
    shape = torch.full((n,), -1, dtype=torch.long)
    colour = torch.full((n,), -1, dtype=torch.long)
    for question, answer, image in zip(split.questions, split.answers, split.image_index):
        if answer in ("yes", "no"):
            continue
        if answer in EASY_SHAPES:
            shape[image] = EASY_SHAPES.index(answer)
            if m := _COLOR_WORD.search(question):
                colour[image] = EASY_COLORS.index(m.group(1))
        elif answer in EASY_COLORS:
            colour[image] = EASY_COLORS.index(answer)
            if m := _SHAPE_WORD.search(question):
                shape[image] = EASY_SHAPES.index(m.group(1))
    return shape, colour


def grid_attributes(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(shape, colour)`` class indices ``(N_images, 9)`` of every cell of a Grid-Shapes split (0: empty)."""
    scenes = grid_scenes(split)
    shape = torch.zeros((len(scenes), 9), dtype=torch.long)
    colour = torch.zeros((len(scenes), 9), dtype=torch.long)
    for i, scene in enumerate(scenes):
        for c, cell in enumerate(scene.cells):
            if cell is not None:
                shape[i, c] = GRID_SHAPES.index(cell[0])
                colour[i, c] = GRID_COLORS.index(cell[1])
    return shape, colour


def cell_of_patches(image_px: int, patch_px: int, cells: int = 3) -> torch.Tensor:
    """``(patches,)``: the grid cell (row-major, ``cells`` x ``cells``) holding each patch's centre.

    With 60 px images, 6 px patches and 20 px cells, each cell owns 3 or 4 patches per side.
    """
    side = image_px // patch_px
    centre = torch.arange(side) * patch_px + patch_px / 2
    row = (centre * cells // image_px).long().clamp(max=cells - 1)
    return (row[:, None] * cells + row[None, :]).reshape(-1)


def yes_no_templates(split: Split) -> list[tuple[str, str, bool]]:
    """easy-VQA's yes/no question templates, read off a split: ``(template, "shape" | "color", negated)``.

    A template is a question with its attribute word replaced by ``{}`` ("is there not a {} shape?").
    Whether it is negated is read from the data (the answer against the image's labels), not parsed.

    Raises:
        ValueError: a template whose answers contradict each other (labels and questions disagree).
    """
    shape, colour = easy_vqa_attributes(split)
    seen: dict[tuple[str, str], bool] = {}
    for question, answer, image in zip(split.questions, split.answers, split.image_index):
        if answer not in ("yes", "no"):
            continue
        for kind, names, labels, pattern in (("shape", EASY_SHAPES, shape, _SHAPE_WORD),
                                             ("color", EASY_COLORS, colour, _COLOR_WORD)):  # fmt: skip
            m = pattern.search(question)
            if m is None or labels[image] < 0:
                continue
            template = question[: m.start()] + "{}" + question[m.end() :]
            negated = (answer == "yes") != (names[labels[image]] == m.group(1))
            if seen.setdefault((template, kind), negated) != negated:
                raise ValueError(f"Template {template!r} has contradicting answers in the data.")
    return sorted((t, k, n) for (t, k), n in seen.items())


def balanced_yes_no(
    templates: list[tuple[str, str, bool]], shape: int, colour: int, k: int, generator: torch.Generator
) -> list[tuple[str, str]]:
    """``k`` yes/no questions about an easy-VQA image with known ``shape`` / ``colour`` (class indices).

    Half ask about the image's own attribute and half about another value, so "yes" and "no" are
    equally likely whatever the template: answering them takes reading the image, where the
    test set's own questions can largely be answered from the template alone (about 86% of "is
    there a <colour> shape?" are "no").
    """
    out = []
    for _ in range(k):
        template, kind, negated = templates[int(torch.randint(len(templates), (1,), generator=generator))]
        names, true = (EASY_SHAPES, shape) if kind == "shape" else (EASY_COLORS, colour)
        if true < 0:
            continue
        match = bool(torch.rand((), generator=generator) < 0.5)
        if match:
            value = true
        else:
            value = int(torch.randint(len(names) - 1, (1,), generator=generator))
            value += value >= true
        out.append((template.format(names[value]), "yes" if match != negated else "no"))
    return out
