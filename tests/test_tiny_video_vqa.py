"""The shipped tiny Moving-Shapes video model (``tokenprune/assets/tiny-video-qwen2vl``): small, stock, accurate."""

from __future__ import annotations

import json

import pytest
import torch

from tokenprune.vqa_video import moving_shapes as ms
from tokenprune.vqa_video.evaluate import evaluate
from tokenprune.vqa_video.model import ASSET_DIR, VISUAL_TOKENS, load_tiny_video_vqa

N = 240
"""The first 240 test questions: 40 videos, 120 direction questions and 40 of each other kind."""
FLOOR = {"direction": 0.85, "appear": 0.85, "all": 0.7}
"""Floors on that slice. The shipped model is at chance on count and order (its card: 32.4% and 52.6% on the full
split), so those kinds have no floor here; raise them with the model."""


@pytest.fixture(scope="module")
def vqa():
    previous = torch.get_num_threads()
    torch.set_num_threads(min(2, previous))
    yield load_tiny_video_vqa()
    torch.set_num_threads(previous)


def test_checkpoint_is_small_stock_safetensors_with_card():
    files = {p.name: p.stat().st_size for p in ASSET_DIR.iterdir()}
    assert {"model.safetensors", "config.json", "vocab.json", "MODEL_CARD.md"} <= set(files)
    assert sum(files.values()) < 30e6
    config = json.loads((ASSET_DIR / "config.json").read_text())
    assert config["architectures"] == ["Qwen2VLForConditionalGeneration"]


def test_load_errors_name_the_training_script(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_tiny_video_vqa.py"):
        load_tiny_video_vqa(tmp_path)


def test_dense_accuracy_floor_on_the_test_split(vqa):
    result = evaluate(vqa, ms.split("test", size=N // 6), limit=N)
    assert result["questions"] == N and result["flops_fraction"] == 1.0
    for kind, floor in FLOOR.items():
        assert result[kind] >= floor, (kind, result)


def test_a_video_is_324_visual_tokens_over_9_steps(vqa):
    ids = torch.tensor([vqa.prompt_ids("which way does the red shape move ?")])
    assert int((ids == vqa.vocab.id("<|video_pad|>")).sum()) == VISUAL_TOKENS == 324
    assert vqa.model.config.vision_config.temporal_patch_size == 2 and ms.STEPS * ms.FRAMES_PER_STEP == 18


def test_eval_video_defaults_to_the_shipped_model(tmp_path):
    from tokenprune.tools.cli import main

    out = tmp_path / "sweep.json"
    assert main(["eval", "--video", "--strategy", "evs", "--limit", "6", "--no-progress", "--json", str(out)]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert [r["strategy"] for r in runs] == ["dense", "evs", "evs"] and runs[0]["all"] > 0.5
