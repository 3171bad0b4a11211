"""Training a wrapped LLaVA: HF `Trainer` (labels, gradient checkpointing, bf16 autocast on CPU).

The wrapped model is an ordinary `PreTrainedModel` to the Trainer: labels go through the head,
the engine picks the training query from them and realigns the loss. The checks: the first
logged loss equals a direct forward of the same batch, the loss decreases, gradient checkpointing
gives the same trajectory as without, every training step pruned, and pruning changed the loss.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

import tiny_models as tm
import tokenprune

pytest.importorskip("accelerate")  # the Trainer needs it; it is in the `integrations` extra

SCHEDULE = dict(layer_list=[2, 4, 6], image_token_ratio_list=[0.5, 0.25, 0.125])
KEYS = ("input_ids", "attention_mask", "pixel_values", "labels")


class TinyCaptions(Dataset):
    """Four single-image samples of equal length (prompt, image, prompt, 4 answer tokens)."""

    def __init__(self, model, n: int = 4):
        rows = [tm.add_labels(tm.llava_inputs(model, "single", seed=s), answer_len=4, seed=s) for s in range(n)]
        self.rows = [{k: row[k][0] for k in KEYS} for row in rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def collate(rows: list[dict]) -> dict:
    return {k: torch.stack([r[k] for r in rows]) for k in KEYS}


# transformers 5.x renamed gradient checkpointing to "activation checkpointing" (the old names warn).
GC_ARG = "activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ else "gradient_checkpointing"
GC_FLAG = "is_activation_checkpointing" if GC_ARG == "activation_checkpointing" else "is_gradient_checkpointing"


def _train(model, data, tmp_path, steps: int = 6, **args) -> list[float]:
    config = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=steps,
        per_device_train_batch_size=len(data),
        learning_rate=3e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
        **args,
    )
    trainer = Trainer(model=model, args=config, train_dataset=data, data_collator=collate)
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def _model(seed: int = 0):
    model = tm.make_llava(dtype=torch.float32, seed=seed)
    model.generation_config.suppress_tokens = None
    return model


def test_trainer_first_loss_is_the_forward_loss_and_loss_decreases(tmp_path):
    model = tokenprune.wrap(_model(), "pyramiddrop", **SCHEDULE)
    data = TinyCaptions(model)
    with torch.no_grad():
        expected = float(model(**collate(data.rows)).loss)
    losses = _train(model, data, tmp_path)
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert losses[0] == pytest.approx(expected, rel=1e-5)
    assert losses[-1] < 0.8 * losses[0], losses
    stats = model.tokenprune.stats  # the last training step pruned: 16 -> 8 -> 4 -> 2 per sample
    assert [row[0] for row in stats.visual_tokens] == [16, 16, 8, 8, 4, 4, 2, 2]


def test_trainer_gradient_checkpointing_gives_the_same_trajectory(tmp_path):
    runs = []
    for gc in (False, True):
        model = tokenprune.wrap(_model(), "pyramiddrop", **SCHEDULE)
        runs.append(_train(model, TinyCaptions(model), tmp_path / str(gc), steps=3, **{GC_ARG: gc}))
        assert getattr(model, GC_FLAG) is gc
    assert runs[0] == pytest.approx(runs[1], rel=1e-5, abs=1e-6)


def test_trainer_pruned_and_dense_runs_differ(tmp_path):
    """A negative control: the same run without the wrap has a different first loss."""
    dense = _model()
    data = TinyCaptions(dense)
    dense_losses = _train(dense, data, tmp_path / "dense", steps=1)
    pruned = tokenprune.wrap(_model(), "pyramiddrop", **SCHEDULE)
    pruned_losses = _train(pruned, data, tmp_path / "pruned", steps=1)
    assert abs(dense_losses[0] - pruned_losses[0]) > 1e-3


def test_trainer_bf16_autocast_on_cpu(tmp_path):
    """bf16 mixed precision (autocast) where the device allows it; here the CPU."""
    model = tokenprune.wrap(_model(), "pyramiddrop", **SCHEDULE)
    losses = _train(model, TinyCaptions(model), tmp_path, bf16=True)
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0], losses
    assert [row[0] for row in model.tokenprune.stats.visual_tokens][-1] == 2
