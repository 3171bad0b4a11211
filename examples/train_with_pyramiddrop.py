"""Train a LLaVA with and without PyramidDrop and report the measured step-time reduction.

The model is a randomly initialised `LlavaForConditionalGeneration` built from configs (no
download): a small CLIP tower and a Llama decoder whose size you choose. Two copies with the same
weights train on the same batches with the same optimizer; one is wrapped with PyramidDrop (the
paper's training recipe: 4 equal stages, λ = 0.5, query = the last instruction token). Steps
alternate between the two models, and the report gives median step times (forward + backward +
AdamW step), the reduction, the FLOPs-ideal reduction of the decoder's visual tokens from the cost
model, and both loss curves.

    OMP_NUM_THREADS=1 python examples/train_with_pyramiddrop.py --threads 1      # CPU, about a minute
    python examples/train_with_pyramiddrop.py --device cuda --dtype bfloat16 \\
        --hidden 2048 --layers 16 --image-side 24 --batch 8 --steps 30            # one GPU
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 \\
        examples/train_with_pyramiddrop.py --threads 1                           # DDP, 2 CPU processes

Under torchrun (``WORLD_SIZE`` > 1) both models are wrapped in `DistributedDataParallel` after the
PyramidDrop wrap (gloo on the CPU, nccl on GPUs: ``--device cuda`` uses ``cuda:LOCAL_RANK``), every
process draws its own samples, and the report (written by rank 0) gives every rank's median step time;
``--batch`` is per process.

Swap the loop for `transformers.Trainer` as in docs/integrations.md; the wrap is the same.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

import tokenprune

IMAGE_ID, PAD_ID, VOCAB = 1000, 1001, 1002


def build_model(args: argparse.Namespace) -> LlavaForConditionalGeneration:
    """A random LLaVA whose vision tower yields ``image_side**2`` visual tokens per image."""
    patch = 4
    vision = CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        image_size=args.image_side * patch, patch_size=patch,
    )
    text = LlamaConfig(
        vocab_size=VOCAB, hidden_size=args.hidden, intermediate_size=int(args.hidden * 2.6875),
        num_hidden_layers=args.layers, num_attention_heads=max(args.hidden // 64, 1),
        num_key_value_heads=max(args.hidden // 64, 1), max_position_embeddings=4096, pad_token_id=PAD_ID,
    )
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_ID,
                         image_seq_length=args.image_side**2)
    config._attn_implementation = "sdpa"
    torch.manual_seed(args.seed)
    return LlavaForConditionalGeneration(config).to(device=args.device, dtype=getattr(torch, args.dtype))


def make_batches(args: argparse.Namespace, model, rank: int = 0) -> list[dict]:
    """``--samples`` fixed samples: instruction text, image, more text, then a supervised answer."""
    gen = torch.Generator().manual_seed(args.seed + 1000 * rank)  # each process its own samples
    n_image = args.image_side**2
    size = model.config.vision_config.image_size
    samples = []
    for _ in range(args.samples):
        before = torch.randint(3, IMAGE_ID, (8,), generator=gen)
        after = torch.randint(3, IMAGE_ID, (args.prompt_tokens,), generator=gen)
        answer = torch.randint(3, IMAGE_ID, (args.answer_tokens,), generator=gen)
        ids = torch.cat([before, torch.full((n_image,), IMAGE_ID), after, answer])
        labels = torch.full_like(ids, -100)
        labels[-args.answer_tokens :] = answer
        pixels = torch.randn(3, size, size, generator=gen)
        samples.append((ids, labels, pixels))
    batches = []
    for start in range(0, len(samples), args.batch):
        ids, labels, pixels = (torch.stack(col) for col in zip(*samples[start : start + args.batch]))
        batches.append({
            "input_ids": ids.to(args.device),
            "attention_mask": torch.ones_like(ids).to(args.device),
            "pixel_values": pixels.to(device=args.device, dtype=getattr(torch, args.dtype)),
            "labels": labels.to(args.device),
        })
    return batches


def train_step(model, optimizer, batch, device: str) -> tuple[float, float]:
    """One optimizer step; returns (seconds, loss)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, loss.item()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--image-side", type=int, default=12, help="visual tokens per image = side²")
    parser.add_argument("--prompt-tokens", type=int, default=24)
    parser.add_argument("--answer-tokens", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12, help="measured steps per model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = 0
    owns_group = world > 1 and not dist.is_initialized()  # a caller may have set up the process group
    if world > 1:
        if args.device.startswith("cuda"):
            args.device = f"cuda:{os.environ['LOCAL_RANK']}"
            torch.cuda.set_device(args.device)
        if owns_group:
            dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
        rank = dist.get_rank()

    dense = build_model(args)
    pruned = tokenprune.wrap(copy.deepcopy(dense), "pyramiddrop")  # 4 stages, λ = 0.5 (paper recipe)
    models = {"dense": dense, "pyramiddrop": pruned}
    for model in models.values():
        model.train()
        if args.gradient_checkpointing:
            model.gradient_checkpointing_enable()
    batches = make_batches(args, dense, rank)
    if world > 1:  # wrap first, then DDP (the vision tower's last layer is unused by LLaVA: find them)
        models = {name: DistributedDataParallel(m, find_unused_parameters=True) for name, m in models.items()}
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=args.lr) for name, m in models.items()}

    times: dict[str, list[float]] = {name: [] for name in models}
    losses: dict[str, list[float]] = {name: [] for name in models}
    for step in range(args.warmup + args.steps):
        batch = batches[step % len(batches)]
        order = list(models) if step % 2 == 0 else list(reversed(list(models)))  # alternate who goes first
        for name in order:
            seconds, loss = train_step(models[name], optimizers[name], batch, args.device)
            losses[name].append(loss)
            if step >= args.warmup:
                times[name].append(seconds)

    stats = pruned.tokenprune.stats
    median = {name: statistics.median(t) for name, t in times.items()}
    per_rank = [median]
    if world > 1:
        per_rank = [None] * world
        dist.all_gather_object(per_rank, median)
        if owns_group:
            dist.destroy_process_group()
    report = {
        "model": {"hidden": args.hidden, "layers": args.layers, "visual_tokens": args.image_side**2,
                  "sequence": batches[0]["input_ids"].shape[1], "batch": args.batch, "device": args.device,
                  "dtype": args.dtype, "threads": torch.get_num_threads(),
                  "gradient_checkpointing": args.gradient_checkpointing, "processes": world},
        "schedule": {"layers": list(pruned.tokenprune.layers),
                     "visual_tokens_per_layer": [row[0] for row in stats.visual_tokens]},
        "median_step_s": median,
        "median_step_s_per_rank": per_rank,
        "step_time_reduction": 1 - median["pyramiddrop"] / median["dense"],
        "flops_ideal_reduction": stats.flops_saved,
        "loss_first_last": {name: [l[0], l[-1]] for name, l in losses.items()},
        "steps_measured": args.steps,
    }
    if rank != 0:
        return report
    print(json.dumps(report, indent=1))
    print(f"\nstep time: dense {median['dense'] * 1e3:.0f} ms, PyramidDrop {median['pyramiddrop'] * 1e3:.0f} ms "
          f"-> {report['step_time_reduction']:.1%} less (FLOPs-ideal for the decoder's visual tokens: "
          f"{report['flops_ideal_reduction']:.1%})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
