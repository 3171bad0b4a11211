"""The VQA data: fixed splits, deterministic generation, the word-level tokenizer and batch encoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokenprune.tools.vqa import grid_shapes
from tokenprune.tools.vqa.datasets import load_split
from tokenprune.tools.vqa.model import NUM_PATCHES, TinyVQA, build_tokenizer, vocabulary


def test_grid_shapes_is_deterministic_and_answers_match_the_scene():
    a = grid_shapes.make_scene(np.random.default_rng(3))
    b = grid_shapes.make_scene(np.random.default_rng(3))
    assert a == b
    assert np.array_equal(np.asarray(grid_shapes.render(a)), np.asarray(grid_shapes.render(b)))
    qa = dict(grid_shapes.questions(a, np.random.default_rng(0), k=50))
    for i, cell in enumerate(a.cells):
        where = grid_shapes.POSITIONS[i]
        if f"is there a shape in the {where}?" in qa:
            assert qa[f"is there a shape in the {where}?"] == ("no" if cell is None else "yes")
        if cell is not None and f"what color is the shape in the {where}?" in qa:
            assert qa[f"what color is the shape in the {where}?"] == cell[1]


def test_shape_colour_is_drawn_in_its_cell():
    scene = grid_shapes.make_scene(np.random.default_rng(5))
    pixels = np.asarray(grid_shapes.render(scene)).astype(int)
    for i, cell in enumerate(scene.cells):
        r, c = divmod(i, 3)
        block = pixels[20 * r : 20 * r + 20, 20 * c : 20 * c + 20].reshape(-1, 3)
        hit = (np.abs(block - grid_shapes.COLORS[cell[1]]).sum(1) < 10).sum() if cell else 0
        assert (hit > 10) == (cell is not None)


def test_grid_shapes_test_split_is_fixed():
    split = load_split("grid-shapes", "test")
    assert len(split) == 2000 and split.images.shape == (1000, 3, 60, 60)
    assert split.images.dtype == torch.uint8
    # pinned: a change to the generator silently changes the benchmark, so it must fail here
    assert split.questions[:2] == ["is there a shape in the top right?", "what shape is in the bottom right?"]
    assert int(split.images.long().sum()) == int(load_split("grid-shapes", "test").images.long().sum())


def test_easy_vqa_keeps_its_split():
    pytest.importorskip("easy_vqa")
    test = load_split("easy-vqa", "test")
    assert len(test) == 9673 and test.images.shape == (1000, 3, 60, 60)
    assert set(test.answers) <= {"circle", "green", "red", "gray", "yes", "teal", "black", "rectangle", "yellow",
                                 "triangle", "brown", "blue", "no"}  # fmt: skip


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="grid-shapes"):
        load_split("coco", "test")
    with pytest.raises(ValueError, match="train"):
        load_split("grid-shapes", "val")


def test_tokenizer_and_encoding_round_trip():
    tok = build_tokenizer(vocabulary(["What color is the shape?", "red", "is there a shape in the center?"]))
    assert tok.convert_ids_to_tokens(tok("what color is the shape?", add_special_tokens=False)["input_ids"]) == [
        "what", "color", "is", "the", "shape", "?"]  # fmt: skip
    vqa = TinyVQA(model=None, tokenizer=tok)
    images = torch.zeros((2, 3, 60, 60), dtype=torch.uint8)
    batch = vqa.encode(images, ["what color is the shape?", "is there a shape?"], ["red", "red"])
    ids, labels = batch["input_ids"], batch["labels"]
    assert ((ids == vqa.image_id).sum(1) == NUM_PATCHES).all()
    assert ids[1, 0] == tok.pad_token_id and batch["attention_mask"][1, 0] == 0  # left padding
    assert tok.convert_ids_to_tokens(labels[0][labels[0] != -100].tolist()) == ["red", "[EOS]"]
    assert batch["position_ids"][0, -1] == ids.shape[1] - 1
    assert batch["pixel_values"].min() == -1.0
    multi = vqa.encode_dialogues(images[:1], [[("what color is the shape?", "red"), ("is there a shape?", "red")]])
    assert (multi["labels"] != -100).sum() == 4


def test_isolated_turns_are_each_the_single_question_prompt():
    """With ``isolate_turns`` every turn of a multi-turn row gives the logits of its own one-question encoding."""
    from tokenprune.tools.vqa.model import load_tiny_vqa

    vqa = load_tiny_vqa()
    images = load_split("grid-shapes", "test").images[:2]
    dialogues = [
        [("what shape is in the top left?", "circle"), ("is there a shape in the center?", "yes"),
         ("what color is the shape in the top left?", "red")],
        [("is there a shape in the center?", "no")],
    ]  # fmt: skip
    batch = vqa.encode_dialogues(images, dialogues, isolate_turns=True)
    assert batch["attention_mask"].shape == (2, 1, batch["input_ids"].shape[1], batch["input_ids"].shape[1])
    with torch.no_grad():
        rows = vqa.model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        for r, turns in enumerate(dialogues):
            answers = (batch["labels"][r] != -100).nonzero().squeeze(1).view(len(turns), 2)  # answer word + [EOS]
            for j, (question, answer) in enumerate(turns):
                single = vqa.encode(images[r : r + 1], [question], [answer])
                own = (single["labels"][0] != -100).nonzero().squeeze(1)
                logits = vqa.model(**{k: v for k, v in single.items() if k != "labels"}).logits[0]
                assert (rows[r, answers[j] - 1] - logits[own - 1]).abs().max() < 1e-4
                assert batch["position_ids"][r, answers[j][0] - 1] == single["position_ids"][0, own[0] - 1]
    shared = vqa.encode_dialogues(images, dialogues)  # the default: later turns see earlier ones
    assert shared["attention_mask"].ndim == 2
