"""Train a PyramidDrop-wrapped LLaVA with the transformers `Trainer` on several processes (DDP or DeepSpeed).

Launch it with accelerate or torchrun; every process trains on its own share of the batches:

    OMP_NUM_THREADS=1 accelerate launch --multi_gpu --num_processes 2 \\
        examples/train_distributed_trainer.py --out runs/ddp                     # DDP (CPU: gloo)
    DS_ACCELERATOR=cpu OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 \\
        examples/train_distributed_trainer.py --deepspeed 3 --out runs/zero3     # DeepSpeed ZeRO-3

The model is a random `LlavaForConditionalGeneration` built from configs (nothing is downloaded),
small enough to train in seconds on a CPU; pass `--hidden/--layers/--image-side` for more. The wrap
comes first, then the Trainer (and accelerate's DDP, or DeepSpeed) take the model as usual. On GPUs,
accelerate's FSDP plugin is one more option of the same script (`TrainingArguments(fsdp=...)`); on
the CPU accelerate ignores it (its FSDP and DeepSpeed plugins need an accelerator; DeepSpeed brings
its own CPU accelerator), so FSDP is checked with `fully_shard` directly in
`tests/distributed_checks.py`.

What each process writes to ``--out`` (``rank<r>.json``): its logged losses, the visual tokens each
decoder layer of its last step kept per sample (``model.tokenprune.stats``), and, with ``--save``
(rank 0), the check of the saved checkpoint: its ``state_dict`` keys equal a never-wrapped model's,
and the reloaded, re-wrapped model gives the trained model's loss on a fixed batch.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    Trainer,
    TrainingArguments,
)

import tokenprune

IMAGE_ID, PAD_ID, VOCAB = 200, 201, 202
KEYS = ("input_ids", "attention_mask", "pixel_values", "labels")


def build_model(hidden: int, layers: int, image_side: int, seed: int = 0) -> LlavaForConditionalGeneration:
    """A random LLaVA whose tower yields ``image_side**2`` visual tokens per image (float32, SDPA)."""
    patch = 4
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=image_side * patch, patch_size=patch)
    text = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                       num_attention_heads=max(hidden // 16, 1), num_key_value_heads=max(hidden // 32, 1),
                       max_position_embeddings=1024, pad_token_id=PAD_ID, tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_ID,
                         image_seq_length=image_side**2)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config)


class Captions(Dataset):
    """Fixed samples: instruction, image, more instruction, a supervised answer (all the same length)."""

    def __init__(self, model, n: int, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        n_image = model.config.image_seq_length
        size = model.config.vision_config.image_size
        self.rows = []
        for _ in range(n):
            before, after, answer = (torch.randint(3, IMAGE_ID, (k,), generator=gen) for k in (4, 6, 4))
            ids = torch.cat([before, torch.full((n_image,), IMAGE_ID), after, answer])
            labels = torch.full_like(ids, -100)
            labels[-len(answer):] = answer
            self.rows.append({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                              "pixel_values": torch.randn(3, size, size, generator=gen), "labels": labels})

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def collate(rows: list[dict]) -> dict:
    return {k: torch.stack([r[k] for r in rows]) for k in KEYS}


def training_arguments(args: argparse.Namespace) -> TrainingArguments:
    extra: dict = {"use_cpu": args.device == "cpu"}
    if args.deepspeed:
        # DeepSpeed sets up its own process group (on the CPU: DS_ACCELERATOR=cpu, gloo), so no use_cpu.
        extra = {"deepspeed": {
            "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
            "zero_allow_untested_optimizer": True,
            "zero_optimization": {"stage": args.deepspeed, "stage3_gather_16bit_weights_on_model_save": True},
        }}
    return TrainingArguments(
        output_dir=str(args.out / "trainer"), max_steps=args.steps, per_device_train_batch_size=args.batch,
        learning_rate=args.lr, logging_steps=1, save_strategy="no", report_to="none", seed=0,
        dataloader_num_workers=0, disable_tqdm=True, **extra,
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--deepspeed", type=int, choices=(2, 3), help="DeepSpeed ZeRO stage (else DDP)")
    parser.add_argument("--save", action="store_true", help="save the model, reload it and check it (rank 0)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--image-side", type=int, default=4, help="visual tokens per image = side²")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=2, help="per process")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    model = build_model(args.hidden, args.layers, args.image_side)
    args.plain_keys = sorted(model.state_dict())  # before the wrap, for the checkpoint check
    tokenprune.wrap(model, "pyramiddrop")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    data = Captions(model, n=args.batch * world)  # one batch per process per step: every step sees all samples
    trainer = Trainer(model=model, args=training_arguments(args), train_dataset=data, data_collator=collate)
    trainer.train()

    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    stats = model.tokenprune.stats  # this rank's last training step
    report = {
        "rank": rank,
        "world_size": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
        # accelerate's own count; on the CPU with DeepSpeed it finds no accelerator backend and counts 1
        # (every rank then reads the whole dataset): see docs/integrations.md.
        "accelerate_processes": trainer.accelerator.num_processes,
        "distributed": str(trainer.accelerator.distributed_type),
        "zero_stage": trainer.deepspeed.zero_optimization_stage() if trainer.deepspeed is not None else None,
        "losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
        "visual_tokens_per_layer": stats.visual_tokens,
        "flops_saved": stats.flops_saved,
    }
    if args.save:
        report["checkpoint"] = save_and_check(trainer, data, args)
    (args.out / f"rank{rank}.json").write_text(json.dumps(report, indent=1))
    return report


def save_and_check(trainer: Trainer, data: Captions, args: argparse.Namespace) -> dict | None:
    """Save through the Trainer (every rank takes part), then check the files on rank 0."""
    folder = args.out / "checkpoint"
    trainer.save_model(str(folder))
    trainer.accelerator.wait_for_everyone()
    batch = collate(data.rows[: args.batch])
    model = trainer.model  # under ZeRO-3: partitioned; a forward gathers each module as in training
    model.eval()
    with torch.no_grad():
        trained_loss = float(model(**batch).loss)
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return None
    if trainer.deepspeed is not None:  # else from_pretrained would partition the model for ZeRO-3 (on rank 0 alone)
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
    loaded = LlavaForConditionalGeneration.from_pretrained(folder)
    loaded_keys = sorted(loaded.state_dict())
    tokenprune.wrap(loaded, "pyramiddrop").eval()
    with torch.no_grad():
        loaded_loss = float(loaded(**batch).loss)
    return {"keys_equal_never_wrapped": loaded_keys == args.plain_keys, "num_keys": len(loaded_keys),
            "trained_loss": trained_loss, "reloaded_loss": loaded_loss,
            "reloaded_pruned": loaded.tokenprune.stats.visual_tokens[-1]}


if __name__ == "__main__":
    main()
