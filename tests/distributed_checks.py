"""Distributed training of a wrapped tiny LLaVA, compared with one process over the union batch.

Run under torchrun (2 CPU processes, gloo); rank 0 writes every measured difference to ``--out``:

    OMP_NUM_THREADS=1 python -m torch.distributed.run --nproc_per_node 2 tests/distributed_checks.py \\
        --out dist.json --tmp /tmp/dist-ckpt

`tests/test_distributed.py` launches it once and asserts on the JSON. Each check trains the same
float64 tiny LLaVA (PyramidDrop, 16 -> 8 -> 4 -> 2 visual tokens per image) for two SGD steps.
Rank 0 gets samples with 1 and 2 images, rank 1 a text-only sample and a 1-image sample with a
longer answer: different image counts, padding and supervised-token counts per rank. Every rank
also runs the single-process reference (the unsharded model over the union of both batches).

Why the loss is normalised by the global token count: a per-rank mean loss, averaged by DDP,
weights each rank's tokens by 1 / (its own count), while one process over the union batch weights
every token by 1 / (total count); the two differ as soon as ranks hold different numbers of
supervised tokens (they do here: 6 and 9). With ``num_items_in_batch`` = the global count (what
the `Trainer` passes when it averages tokens across devices), each rank's loss is its share of the
global mean, and multiplying it by the world size before ``backward`` undoes the wrappers' mean
over ranks, so the reduced gradient is the gradient of the union batch's mean loss. The
``ddp_per_rank_mean`` check measures the gap without this (it must be large).

The loss is computed in the model's dtype (float64) here: transformers' default loss upcasts
logits to float32, which alone would limit agreement to ~1e-7.
"""

from __future__ import annotations

import argparse
import json
import os
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn import functional as F  # noqa: N812
from torch.nn.parallel import DistributedDataParallel

import tiny_models as tm
import tokenprune
from tokenprune.errors import UnsupportedFeatureError

WORLD = 2
RANK_ROWS = {0: [0, 1], 1: [2, 3]}  # which union rows each rank trains on
# Rank 1 holds no image at all: its vision tower and the scorer stay idle. DDP only (find_unused_parameters):
# under FSDP2 a rank that skips the vision tower breaks the gradient reduce-scatter, dense or wrapped.
TEXT_ONLY_RANK = {0: [0, 1, 3], 1: [2]}
STEPS, LR = 2, 0.05


# -- data -------------------------------------------------------------------------------------
def samples(model) -> list[dict]:
    """Four unpadded samples: 1 image, 2 images, text only (answers of 3 tokens); 1 image (6 tokens)."""
    mixed = tm.add_labels(tm.llava_inputs(model, "mixed", seed=0), answer_len=3, seed=1)
    other = tm.add_labels(tm.llava_inputs(model, "left_padded", seed=2), answer_len=6, seed=3)
    return [tm.single_row(mixed, i) for i in range(3)] + [tm.single_row(other, 0)]


def collate(rows: list[dict]) -> dict:
    """Left-pad samples into one batch (position ids from the mask, as generate would)."""
    width = max(r["input_ids"].shape[1] for r in rows)
    batch = {"input_ids": [], "attention_mask": [], "labels": []}
    for r in rows:
        pad = width - r["input_ids"].shape[1]
        batch["input_ids"].append(F.pad(r["input_ids"], (pad, 0), value=tm.PAD_ID))
        batch["attention_mask"].append(F.pad(r["attention_mask"], (pad, 0), value=0))
        batch["labels"].append(F.pad(r["labels"], (pad, 0), value=-100))
    out = {k: torch.cat(v) for k, v in batch.items()}
    out["position_ids"] = (out["attention_mask"].cumsum(-1) - 1).clamp(min=0) * out["attention_mask"]
    pixels = [r["pixel_values"] for r in rows if "pixel_values" in r]
    if pixels:
        out["pixel_values"] = torch.cat(pixels)
    return out


def supervised_tokens(batch: dict) -> int:
    return int((batch["labels"][:, 1:] != -100).sum())


# -- model ------------------------------------------------------------------------------------
def exact_loss(logits, labels, vocab_size, num_items_in_batch=None, ignore_index=-100, shift_labels=None, **_):
    """transformers' causal-LM loss without its float32 upcast (sum / num_items_in_batch, else mean)."""
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[:, 1:]
    logits, shift_labels = logits.reshape(-1, vocab_size), shift_labels.reshape(-1).to(logits.device)
    if num_items_in_batch is None:
        return F.cross_entropy(logits, shift_labels, ignore_index=ignore_index)
    return F.cross_entropy(logits, shift_labels, ignore_index=ignore_index, reduction="sum") / num_items_in_batch


def make_model(dtype=torch.float64, seed: int = 0, loss=exact_loss):
    model = tm.make_llava(dtype=dtype, seed=seed)
    model.generation_config.suppress_tokens = None
    if loss is not None:
        model.loss_function = loss
    return model.train()


def decoder_layers(model):
    return model.model.language_model.layers


def enable_checkpointing(model) -> None:
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


# -- training ---------------------------------------------------------------------------------
def full(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor: DTensors (FSDP2 gradients and parameters) are gathered (a collective)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def train(model, inner, batch, num_items, scale: float, steps: int = STEPS, lr: float = LR, loss_kwargs=True):
    """``steps`` SGD steps; per step: the loss, every gradient (after the wrappers' reduction), the stats."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    history = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        extra = {"num_items_in_batch": num_items} if loss_kwargs else {}
        loss = model(**batch, **extra).loss
        (loss * scale).backward()
        grads = {n: full(p.grad).detach().clone() for n, p in inner.named_parameters() if p.grad is not None}
        stats = inner.tokenprune.stats  # None on a rank that has not seen an image yet
        history.append({"loss": loss.detach().clone(), "grads": grads,
                        "visual_tokens": stats.visual_tokens if stats is not None else None})
        optimizer.step()
    return history


def reference(strategy: str = "pyramiddrop", checkpointing: bool = False, dtype=torch.float64, **options) -> dict:
    """One process, the union batch, no distributed wrapper (and the dense loss, a negative control)."""
    model = make_model(dtype)
    batch = collate(samples(model))
    with torch.no_grad():
        dense = float(model(**batch, num_items_in_batch=supervised_tokens(batch)).loss)
    tokenprune.wrap(model, strategy, **options)
    if checkpointing:
        enable_checkpointing(model)
    history = train(model, model, batch, supervised_tokens(batch), 1.0)
    return {"history": history, "tokens": supervised_tokens(batch), "dense_loss": dense}


def global_loss(loss: torch.Tensor) -> float:
    total = loss.clone()
    dist.all_reduce(total)
    return float(total)


def compare(history: list[dict], ref: dict, rank: int, split: dict = RANK_ROWS) -> dict:
    """Largest differences from the reference: loss (summed over ranks), every gradient, kept counts."""
    rows = split[rank]
    loss_gap = grad_gap = grad_scale = 0.0
    stats_match, keys_match, extra_grad = True, True, 0.0
    for step, ref_step in zip(history, ref["history"]):
        loss_gap = max(loss_gap, abs(global_loss(step["loss"]) - float(ref_step["loss"])))
        keys_match &= step["grads"].keys() == ref_step["grads"].keys()
        for name in step["grads"].keys() - ref_step["grads"].keys():  # e.g. DeepSpeed's zeros for unused weights
            extra_grad = max(extra_grad, step["grads"][name].abs().max().item())
        for name, grad in ref_step["grads"].items():
            other = step["grads"].get(name)
            grad_gap = max(grad_gap, float("inf") if other is None else (other - grad).abs().max().item())
            grad_scale = max(grad_scale, grad.abs().max().item())
        expected = [[layer[i] for i in rows] for layer in ref_step["visual_tokens"]]
        if not any(any(layer) for layer in expected):  # no image on this rank: the engine has no stats
            expected = None
        stats_match &= step["visual_tokens"] == expected
    return {"loss_gap": loss_gap, "grad_gap": grad_gap, "grad_scale": grad_scale, "grad_keys_match": keys_match,
            "extra_grad_max": extra_grad,
            "reference_losses": [float(s["loss"]) for s in ref["history"]], "dense_loss": ref.get("dense_loss"),
            "stats_match_union_rows": stats_match, "visual_tokens": history[-1]["visual_tokens"],
            "losses": [float(s["loss"]) for s in history]}


def rank_batch(model, rank: int, split: dict = RANK_ROWS) -> tuple[dict, int]:
    rows = samples(model)
    return collate([rows[i] for i in split[rank]]), supervised_tokens(collate(rows))


# -- checks -----------------------------------------------------------------------------------
def check_ddp(rank: int, refs: dict, checkpointing: bool = False, dtype=torch.float64, split=RANK_ROWS) -> dict:
    model = make_model(dtype)
    tokenprune.wrap(model, "pyramiddrop")  # wrap first, then hand the model to DDP
    if checkpointing:
        enable_checkpointing(model)
    ddp = DistributedDataParallel(model, find_unused_parameters=True)
    batch, num_items = rank_batch(model, rank, split)
    ref = refs["float32"] if dtype == torch.float32 else refs["gc" if checkpointing else "plain"]
    result = compare(train(ddp, model, batch, num_items, scale=WORLD), ref, rank, split)
    result["checkpointing"] = model.is_activation_checkpointing
    return result


def check_ddp_per_rank_mean(rank: int, refs: dict) -> dict:
    """The naive setup: each rank's own mean loss, averaged by DDP (differs from the union's mean)."""
    model = make_model()
    tokenprune.wrap(model, "pyramiddrop")
    ddp = DistributedDataParallel(model, find_unused_parameters=True)
    batch, _ = rank_batch(model, rank)
    history = train(ddp, model, batch, None, scale=1.0, loss_kwargs=False)
    for step in history:  # DDP reports each rank's own mean; compare the mean over ranks
        step["loss"] = step["loss"] / WORLD
    union = make_model()
    tokenprune.wrap(union, "pyramiddrop")
    union_batch = collate(samples(union))
    mean_ref = {"history": train(union, union, union_batch, None, 1.0, loss_kwargs=False)}
    return compare(history, mean_ref, rank)


def check_ddp_wrap_after(rank: int, refs: dict) -> dict:
    """tokenprune.wrap on the DDP container fails clearly; wrapping ``ddp.module`` works like wrapping first."""
    model = make_model()
    ddp = DistributedDataParallel(model, find_unused_parameters=True)
    try:
        tokenprune.wrap(ddp, "pyramiddrop")
        error = None
    except Exception as exc:  # noqa: BLE001 - the type and message are what is checked
        error = f"{type(exc).__name__}: {exc}"
    tokenprune.wrap(ddp.module, "pyramiddrop")
    batch, num_items = rank_batch(model, rank)
    result = compare(train(ddp, model, batch, num_items, scale=WORLD), refs["plain"], rank)
    result["container_error"] = error
    return result


def check_fsdp1(rank: int, refs: dict) -> dict:
    """FSDP1: wrapping its output fails clearly; wrapped first (every decoder layer its own unit) it trains."""
    import functools

    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp.wrap import lambda_auto_wrap_policy

    layer_type = type(decoder_layers(make_model())[0])
    policy = functools.partial(lambda_auto_wrap_policy, lambda_fn=lambda m: isinstance(m, layer_type))
    late = FullyShardedDataParallel(make_model(), device_id=torch.device("cpu"), auto_wrap_policy=policy)
    try:
        tokenprune.wrap(late, "pyramiddrop")
        error = None
    except Exception as exc:  # noqa: BLE001 - the type and message are what is checked
        error = f"{type(exc).__name__}: {exc}"
    model = make_model()
    tokenprune.wrap(model, "pyramiddrop")
    fsdp = FullyShardedDataParallel(model, device_id=torch.device("cpu"), auto_wrap_policy=policy,
                                    use_orig_params=True)
    batch, num_items = rank_batch(model, rank)
    optimizer = torch.optim.SGD(fsdp.parameters(), lr=LR)
    history = []
    for _ in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        loss = fsdp(**batch, num_items_in_batch=num_items).loss
        (loss * WORLD).backward()
        with FullyShardedDataParallel.summon_full_params(fsdp, with_grads=True):
            grads = {n.replace("_fsdp_wrapped_module.", ""): p.grad.detach().clone()
                     for n, p in fsdp.named_parameters() if p.grad is not None}
        history.append({"loss": loss.detach().clone(), "grads": grads, "visual_tokens": model.tokenprune.stats.visual_tokens})
        optimizer.step()
    result = compare(history, refs["plain"], rank)
    result["container_error"] = error
    return result


def shard(model, reshard_after_forward=True, mp_policy=None, keep_gathered=()):
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = {"mp_policy": mp_policy} if mp_policy is not None else {"mp_policy": MixedPrecisionPolicy()}
    for i, layer in enumerate(decoder_layers(model)):
        fully_shard(layer, reshard_after_forward=reshard_after_forward and i not in keep_gathered, **policy)
    fully_shard(model, **policy)
    return model


def check_fsdp(rank: int, refs: dict, order: str, checkpointing: bool, strategy: str = "pyramiddrop",
               keep_gathered=(), ref_key: str | None = None, split=RANK_ROWS, **options) -> dict:
    model = make_model()
    if order == "wrap_then_shard":
        tokenprune.wrap(model, strategy, **options)
        shard(model, keep_gathered=keep_gathered)
    else:
        shard(model, keep_gathered=keep_gathered)
        tokenprune.wrap(model, strategy, **options)
    if checkpointing:
        enable_checkpointing(model)
    batch, num_items = rank_batch(model, rank, split)
    history = train(model, model, batch, num_items, scale=WORLD)
    result = compare(history, refs[ref_key or ("gc" if checkpointing else "plain")], rank, split)
    result["sharded_parameters"] = sum(type(p).__name__ == "DTensor" for p in model.parameters())
    result["layer_class"] = type(decoder_layers(model)[2]).__name__
    result["checkpointing"] = model.is_activation_checkpointing
    return result


def check_fsdp_previous_layer_scorer(rank: int, refs: dict) -> dict:
    """FastV scores with the layer below the reduction layer, which FSDP2 has resharded by then."""
    model = make_model()
    tokenprune.wrap(model, "fastv")
    shard(model)
    batch, num_items = rank_batch(model, rank)
    try:
        model(**batch, num_items_in_batch=num_items)
        error = None
    except UnsupportedFeatureError as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - an unclear error is what this check catches
        error = f"unclear {type(exc).__name__}: {exc}"
    # The fix the message names: keep the layer below the reduction layer (index 1) gathered.
    result = check_fsdp(rank, refs, "wrap_then_shard", False, strategy="fastv", keep_gathered=(1,), ref_key="fastv")
    result["resharded_error"] = error
    return result


def check_fsdp_mixed_precision(rank: int, refs: dict) -> dict:
    """bf16 parameters and compute, float32 gradient reduction (FSDP2's MixedPrecisionPolicy) on the CPU."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    model = make_model(dtype=torch.float32, loss=None)  # transformers' own loss (float32 upcast)
    tokenprune.wrap(model, "pyramiddrop")
    shard(model, mp_policy=MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32))
    batch, num_items = rank_batch(model, rank)
    batch["pixel_values"] = batch["pixel_values"].float()
    history = train(model, model, batch, num_items, scale=WORLD, steps=6, lr=0.02)
    union = make_model(dtype=torch.float32, loss=None)
    tokenprune.wrap(union, "pyramiddrop")
    union_batch = collate(samples(union))
    union_batch["pixel_values"] = union_batch["pixel_values"].float()
    with torch.no_grad():
        float32_loss = float(union(**union_batch, num_items_in_batch=supervised_tokens(union_batch)).loss)
    losses = [global_loss(s["loss"]) for s in history]
    return {"losses": losses, "float32_first_loss": float32_loss, "first_loss_gap": abs(losses[0] - float32_loss),
            "visual_tokens": history[-1]["visual_tokens"],
            "compute_dtype": str(history[-1]["grads"][next(iter(history[-1]["grads"]))].dtype)}


def check_fsdp_checkpoint(rank: int, tmp: Path) -> dict:
    """State dict of a wrapped, sharded, trained model: same keys as never wrapped; DCP save/load round trip."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        set_model_state_dict,
    )

    model = make_model()
    tokenprune.wrap(model, "pyramiddrop")
    shard(model)
    batch, num_items = rank_batch(model, rank)
    train(model, model, batch, num_items, scale=WORLD, steps=1)
    full_sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    never_wrapped = sorted(make_model().state_dict())
    folder = tmp / "dcp"
    dcp.save(get_model_state_dict(model), checkpoint_id=str(folder))

    fresh = make_model(seed=1)  # other weights, loaded from the checkpoint
    tokenprune.wrap(fresh, "pyramiddrop")
    shard(fresh)
    state = get_model_state_dict(fresh)
    dcp.load(state, checkpoint_id=str(folder))
    set_model_state_dict(fresh, state)
    with torch.no_grad():
        trained = model(**batch, num_items_in_batch=num_items).loss
        reloaded = fresh(**batch, num_items_in_batch=num_items).loss
    result = {"dcp_loss_trained": global_loss(trained), "dcp_loss_reloaded": global_loss(reloaded),
              "fresh_still_wrapped": isinstance(getattr(fresh, "tokenprune", None), tokenprune.WrapHandle)}
    if rank == 0:  # the full state dict lives on rank 0; load it into one plain process
        plain = make_model(seed=1)
        missing, unexpected = plain.load_state_dict(full_sd, strict=True)
        tokenprune.wrap(plain, "pyramiddrop")
        union_loss = None
        with torch.no_grad():
            rows = samples(plain)
            single = collate([rows[i] for i in RANK_ROWS[0]])
            union_loss = float(plain(**single, num_items_in_batch=num_items).loss)
        result.update({"full_keys_equal_never_wrapped": sorted(full_sd) == never_wrapped, "num_keys": len(full_sd),
                       "full_loaded_rank0_loss": union_loss, "missing": list(missing), "unexpected": list(unexpected)})
    trained_rank = trained.clone()
    gathered = [torch.zeros_like(trained_rank) for _ in range(WORLD)]
    dist.all_gather(gathered, trained_rank)
    result["trained_rank0_loss"] = float(gathered[0])
    return result


def check_deepspeed(rank: int, refs: dict, stage: int, strategy: str = "pyramiddrop") -> dict:
    """ZeRO-2 / ZeRO-3 through deepspeed.initialize (CPU accelerator, gloo), float32."""
    import deepspeed
    from deepspeed.utils import safe_get_full_grad

    model = make_model(dtype=torch.float32)
    tokenprune.wrap(model, strategy)
    config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "gradient_clipping": 0.0,
              "zero_optimization": {"stage": stage}, "zero_allow_untested_optimizer": True}
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    batch, num_items = rank_batch(model, rank)
    history = []
    for _ in range(STEPS):
        loss = engine(**batch, num_items_in_batch=num_items).loss
        engine.backward(loss * WORLD)
        grads = {}
        for name, p in model.named_parameters():
            grad = safe_get_full_grad(p)  # gathered (a collective under ZeRO-3)
            if grad is not None:
                grads[name] = grad.detach().clone()
        history.append({"loss": loss.detach().clone(), "grads": grads,
                        "visual_tokens": model.tokenprune.stats.visual_tokens})
        engine.step()
    result = compare(history, refs["float32" if strategy == "pyramiddrop" else f"{strategy}_float32"], rank)
    result["zero_stage"] = engine.zero_optimization_stage()
    return result


def check_timing_example(tmp: Path) -> dict:
    """`examples/train_with_pyramiddrop.py` under DDP (its step-time numbers are in docs/results/cpu.md)."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "examples" / "train_with_pyramiddrop.py"
    spec = importlib.util.spec_from_file_location("train_with_pyramiddrop", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp / "timing.json"
    report = module.main(["--hidden", "64", "--layers", "4", "--image-side", "4", "--prompt-tokens", "4",
                          "--answer-tokens", "2", "--batch", "1", "--samples", "2", "--steps", "2", "--warmup", "0",
                          "--threads", "1", "--json", str(out)])
    dist.barrier()
    report["written"] = json.loads(out.read_text()) == report if dist.get_rank() == 0 else None
    return report


# -- driver -----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tmp", type=Path, required=True, help="a folder every rank can read and write")
    parser.add_argument("--checks", default="all", help="comma-separated names, or 'all'")
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    assert dist.get_world_size() == WORLD, f"run with --nproc_per_node {WORLD}"
    torch.set_num_threads(1)
    refs = {"plain": reference(), "gc": reference(checkpointing=True), "fastv": reference("fastv")}
    if "deepspeed" in args.checks or "float32" in args.checks:
        refs["float32"] = reference(dtype=torch.float32)
    if "deepspeed_zero3_fastv" in args.checks:
        refs["fastv_float32"] = reference("fastv", dtype=torch.float32)
    checks = {
        "ddp": lambda: check_ddp(rank, refs),
        "ddp_checkpointing": lambda: check_ddp(rank, refs, checkpointing=True),
        "ddp_per_rank_mean": lambda: check_ddp_per_rank_mean(rank, refs),
        "ddp_wrap_after": lambda: check_ddp_wrap_after(rank, refs),
        "ddp_text_only_rank": lambda: check_ddp(rank, refs, split=TEXT_ONLY_RANK),
        "fsdp_wrap_then_shard": lambda: check_fsdp(rank, refs, "wrap_then_shard", False),
        "fsdp_shard_then_wrap": lambda: check_fsdp(rank, refs, "shard_then_wrap", False),
        "fsdp_wrap_then_shard_checkpointing": lambda: check_fsdp(rank, refs, "wrap_then_shard", True),
        "fsdp_shard_then_wrap_checkpointing": lambda: check_fsdp(rank, refs, "shard_then_wrap", True),
        "fsdp_previous_layer_scorer": lambda: check_fsdp_previous_layer_scorer(rank, refs),
        "fsdp_mixed_precision": lambda: check_fsdp_mixed_precision(rank, refs),
        "fsdp_checkpoint": lambda: check_fsdp_checkpoint(rank, args.tmp),
        "fsdp1": lambda: check_fsdp1(rank, refs),
        "timing_example": lambda: check_timing_example(args.tmp),
        "ddp_float32": lambda: check_ddp(rank, refs, dtype=torch.float32),  # the float32 yardstick for DeepSpeed
        # Not in "all": DeepSpeed is optional (tests/test_distributed.py runs these when it is installed).
        "deepspeed_zero2": lambda: check_deepspeed(rank, refs, 2),
        "deepspeed_zero3": lambda: check_deepspeed(rank, refs, 3),
        "deepspeed_zero3_fastv": lambda: check_deepspeed(rank, refs, 3, strategy="fastv"),
    }
    wanted = [n for n in checks if not n.startswith(("deepspeed", "ddp_float32"))] if args.checks == "all" else args.checks.split(",")
    results = {}
    for name in wanted:
        try:
            results[name] = checks[name]()
        except Exception:  # noqa: BLE001 - reported per check; the test names the failing one
            results[name] = {"error": traceback.format_exc()}
        dist.barrier()
    gathered = [None] * WORLD
    dist.all_gather_object(gathered, results)
    if rank == 0:
        args.out.write_text(json.dumps({f"rank{r}": res for r, res in enumerate(gathered)}, indent=1, default=str))
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
