"""Attribute labels for the tiny model's tower pretraining: they must agree with the questions' answers."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

pytest.importorskip("easy_vqa")

from tokenprune.tools.vqa import attributes, grid_shapes  # noqa: E402
from tokenprune.tools.vqa.datasets import grid_scenes, load_split  # noqa: E402


def test_easy_vqa_labels_agree_with_every_yes_no_question():
    split = load_split("easy-vqa", "test")
    shape, colour = attributes.easy_vqa_attributes(split)
    assert shape.shape == colour.shape == (len(split.images),)
    assert (shape >= 0).float().mean() > 0.85 and (colour >= 0).float().mean() > 0.85
    checked = 0
    for q, a, i in zip(split.questions, split.answers, split.image_index):
        if a not in ("yes", "no") or shape[i] < 0 or colour[i] < 0:
            continue
        negated = bool(re.search(r"\bnot\b|\bno\b", q))
        named_shape = next((s for s in attributes.EASY_SHAPES if s in q), None)
        named_colour = next((c for c in attributes.EASY_COLORS if c in q), None)
        present = True
        if named_shape is not None:
            present &= attributes.EASY_SHAPES[shape[i]] == named_shape
        if named_colour is not None:
            present &= attributes.EASY_COLORS[colour[i]] == named_colour
        assert (a == "yes") == (present != negated), (q, a, i)
        checked += 1
    assert checked > 5000


def test_grid_labels_agree_with_the_questions():
    split = load_split("grid-shapes", "test")
    shape, colour = attributes.grid_attributes("test")
    assert shape.shape == (1000, 9)
    where = {p: c for c, p in enumerate(grid_shapes.POSITIONS)}
    for q, a, i in zip(split.questions, split.answers, split.image_index):
        cell = where[re.search(r"in the (.+)\?$", q).group(1)]
        if q.startswith("what shape"):
            assert attributes.GRID_SHAPES[shape[i, cell]] == a
        elif q.startswith("what color"):
            assert attributes.GRID_COLORS[colour[i, cell]] == a
        else:
            assert (shape[i, cell] > 0) == (a == "yes") and (colour[i, cell] > 0) == (a == "yes")


def test_grid_scenes_render_the_split_images():
    split, scenes = load_split("grid-shapes", "test"), grid_scenes("test")
    assert len(scenes) == len(split.images)
    for i in (0, 517, 999):
        image = torch.from_numpy(np.asarray(grid_shapes.render(scenes[i]))).permute(2, 0, 1)
        assert torch.equal(image, split.images[i])
    with pytest.raises(ValueError, match="Unknown split"):
        grid_scenes("validation")


def test_cell_of_patches_covers_the_3x3_grid():
    cells = attributes.cell_of_patches(60, 6)
    assert cells.shape == (100,)
    assert torch.bincount(cells).tolist() == [9, 12, 9, 12, 16, 12, 9, 12, 9]
    assert cells.view(10, 10)[0].tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert cells.view(10, 10)[:, 0].tolist() == [0, 0, 0, 3, 3, 3, 3, 6, 6, 6]


def test_yes_no_templates_are_read_off_the_data():
    templates = attributes.yes_no_templates(load_split("easy-vqa", "train"))
    assert len(templates) == 16  # 8 wordings x (colour, shape)
    negated = {t: n for t, _, n in templates}
    assert negated["is there a {} shape?"] is False and negated["is there not a {} shape?"] is True
    assert negated["does the image not contain a {}?"] is True and negated["is a {} present?"] is False
    assert {k for _, k, _ in templates} == {"shape", "color"}


def test_balanced_yes_no_answers_are_right_and_balanced():
    templates = attributes.yes_no_templates(load_split("easy-vqa", "train"))
    gen = torch.Generator().manual_seed(0)
    shape, colour = attributes.EASY_SHAPES.index("triangle"), attributes.EASY_COLORS.index("teal")
    questions = attributes.balanced_yes_no(templates, shape, colour, 2000, gen)
    assert len(questions) == 2000
    for q, a in questions:
        named = next(w for w in (*attributes.EASY_SHAPES, *attributes.EASY_COLORS) if re.search(rf"\b{w}\b", q))
        matches = named in ("triangle", "teal")
        negated = bool(re.search(r"\bnot\b|\bno\b", q))
        assert (a == "yes") == (matches != negated), q
    yes = sum(a == "yes" for _, a in questions) / len(questions)
    assert 0.45 < yes < 0.55
    assert attributes.balanced_yes_no(templates, -1, -1, 5, gen) == []  # unknown labels: nothing to ask
