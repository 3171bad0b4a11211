"""Training a wrapped LLaVA on 2 CPU processes (gloo): DDP, FSDP2, DeepSpeed, the Trainer.

`tests/distributed_checks.py` runs under torchrun and writes what it measured; these tests assert
on it. The reference is one process training the same model on the union of both ranks' batches.
Launches are shared (one per module fixture) because starting two Python processes that import
torch and transformers costs more than every check together. Select them with ``-m distributed``.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import tiny_models as tm
import tokenprune
from tokenprune.errors import UnsupportedModelError

pytestmark = pytest.mark.distributed

HERE = Path(__file__).resolve().parent
CHECKS = HERE / "distributed_checks.py"
TRAINER_EXAMPLE = HERE.parent / "examples" / "train_distributed_trainer.py"
EXACT = 1e-10  # float64: where the math is the same
RANKS = ("rank0", "rank1")
# Visual tokens per layer (rank 0: 1 and 2 images; rank 1: text only and 1 image), last layer.
LAST_LAYER_KEPT = {"rank0": [2, 4], "rank1": [0, 2]}


def _env() -> dict:
    # CPU only, also on a machine with GPUs (FSDP2 would otherwise build its mesh on CUDA).
    return dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu", TOKENIZERS_PARALLELISM="false",
                CUDA_VISIBLE_DEVICES="")


def _launch(command: list[str], timeout: int = 600) -> None:
    proc = subprocess.run(command, check=False, env=_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")


def _run_checks(tmp: Path, checks: str) -> dict:
    out = tmp / "results.json"
    _launch([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
             str(CHECKS), "--out", str(out), "--tmp", str(tmp), "--checks", checks])
    results = json.loads(out.read_text())
    failed = {f"{rank}/{name}": r["error"] for rank, res in results.items() for name, r in res.items() if "error" in r}
    assert not failed, "\n".join(f"{k}:\n{v}" for k, v in failed.items())
    return results


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    """Every default check of distributed_checks.py, one torchrun launch (about half a minute)."""
    return _run_checks(tmp_path_factory.mktemp("dist"), "all")


def _assert_equals_union_run(result: dict, rank: str, tol: float = EXACT) -> None:
    assert result["loss_gap"] <= tol, result
    assert result["grad_gap"] <= tol * max(1.0, result["grad_scale"]), result
    assert result["grad_keys_match"] and result["extra_grad_max"] == 0.0
    assert result["stats_match_union_rows"], "each rank's kept counts equal its rows of the union run"
    assert result["visual_tokens"][-1] == LAST_LAYER_KEPT[rank]  # it pruned: 16 -> 2 per image
    ref = result["reference_losses"]
    assert ref[1] < ref[0] and abs(ref[0] - result["dense_loss"]) > 1e-3  # training moved; pruning changed the loss


# -- DDP --------------------------------------------------------------------------------------
@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("check", ["ddp", "ddp_checkpointing"])
def test_ddp_equals_one_process_over_the_union_batch(results, check, rank):
    result = results[rank][check]
    _assert_equals_union_run(result, rank)
    assert result["checkpointing"] is (check == "ddp_checkpointing")


def test_ddp_with_a_text_only_rank_equals_one_process(results):
    """Rank 1's batch has no image: no scoring there, no collective in the engine, same gradients."""
    rank0, rank1 = results["rank0"]["ddp_text_only_rank"], results["rank1"]["ddp_text_only_rank"]
    for result in (rank0, rank1):
        assert result["loss_gap"] <= EXACT and result["grad_gap"] <= EXACT * max(1.0, result["grad_scale"])
        assert result["grad_keys_match"] and result["stats_match_union_rows"]
    assert rank0["visual_tokens"][-1] == [2, 4, 2]  # rows with 1, 2 and 1 images
    assert rank1["visual_tokens"] is None  # this rank never saw an image: no stats yet


@pytest.mark.parametrize("rank", RANKS)
def test_ddp_with_per_rank_mean_losses_is_not_the_union_mean(results, rank):
    """Negative control and the reason for num_items_in_batch: ranks hold 6 and 9 answer tokens."""
    result = results[rank]["ddp_per_rank_mean"]
    assert result["loss_gap"] > 1e-2 and result["grad_gap"] > 1e-2, result


@pytest.mark.parametrize("rank", RANKS)
def test_wrapping_the_ddp_container_names_the_fix(results, rank):
    result = results[rank]["ddp_wrap_after"]
    assert result["container_error"].startswith("ParallelContainerError: tokenprune.wrap got a DistributedDataParallel")
    assert "Wrap the model before handing it over" in result["container_error"]
    assert "tokenprune.wrap(container.module" in result["container_error"]
    _assert_equals_union_run(result, rank)  # wrapping ddp.module afterwards works like wrapping first


def test_wrapping_a_data_parallel_container_names_the_fix():
    model = tm.make_llava(dtype=torch.float32)
    with pytest.raises(UnsupportedModelError, match=r"got a DataParallel, a container.*container\.module"):
        tokenprune.wrap(nn.DataParallel(model), "pyramiddrop")
    assert not hasattr(model, "tokenprune")


@pytest.mark.parametrize("rank", RANKS)
def test_fsdp1_wrapped_first_equals_one_process_and_wrapping_its_output_names_the_fix(results, rank):
    result = results[rank]["fsdp1"]
    assert result["container_error"].startswith("ParallelContainerError: tokenprune.wrap got a FullyShardedDataParallel")
    assert "Wrap the model first" in result["container_error"]
    result = dict(result, grad_keys_match=True)  # FSDP1's flat parameters give zeros (not None) to unused weights
    _assert_equals_union_run(result, rank)


# -- FSDP2 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("order", ["wrap_then_shard", "shard_then_wrap"])
@pytest.mark.parametrize("checkpointing", [False, True], ids=["no_gc", "gc"])
def test_fsdp2_equals_one_process_over_the_union_batch(results, order, checkpointing, rank):
    result = results[rank][f"fsdp_{order}" + ("_checkpointing" if checkpointing else "")]
    _assert_equals_union_run(result, rank)
    assert result["sharded_parameters"] > 0 and result["layer_class"] == "FSDPLlamaDecoderLayer"
    assert result["checkpointing"] is checkpointing


@pytest.mark.parametrize("rank", RANKS)
def test_fsdp2_previous_layer_scorer_fails_clearly_and_the_named_fix_works(results, rank):
    """FastV scores with the layer below the reduction layer; FSDP2 resharded it after its forward."""
    result = results[rank]["fsdp_previous_layer_scorer"]
    assert "reshard_after_forward=False" in result["resharded_error"], result["resharded_error"]
    assert "unclear" not in result["resharded_error"]
    assert result["loss_gap"] <= EXACT and result["grad_gap"] <= EXACT * max(1.0, result["grad_scale"])
    assert result["stats_match_union_rows"]


@pytest.mark.parametrize("rank", RANKS)
def test_fsdp2_bf16_mixed_precision_on_cpu_trains(results, rank):
    result = results[rank]["fsdp_mixed_precision"]
    losses = result["losses"]
    assert all(math.isfinite(loss) and abs(loss) < 1e3 for loss in losses)
    assert losses[-1] < 0.5 * losses[0], losses
    assert result["first_loss_gap"] < 0.1  # bf16 compute vs the float32 model (measured 0.026)
    assert result["visual_tokens"][-1] == LAST_LAYER_KEPT[rank]
    assert result["compute_dtype"] == "torch.float32"  # gradients reduced and kept in float32


def test_fsdp2_checkpoint_round_trip(results):
    rank0, rank1 = results["rank0"]["fsdp_checkpoint"], results["rank1"]["fsdp_checkpoint"]
    assert rank0["full_keys_equal_never_wrapped"] and rank0["num_keys"] > 100
    assert rank0["missing"] == [] and rank0["unexpected"] == []
    for result in (rank0, rank1):  # DCP save, load into another wrapped+sharded model: the same model
        assert result["dcp_loss_reloaded"] == result["dcp_loss_trained"]
        assert result["fresh_still_wrapped"]
    # The full state dict loaded into one plain process gives rank 0's loss.
    assert abs(rank0["full_loaded_rank0_loss"] - rank0["trained_rank0_loss"]) <= EXACT


# -- DeepSpeed (optional) ---------------------------------------------------------------------
def test_deepspeed_zero2_and_zero3_equal_one_process(tmp_path):
    """float32 (ZeRO keeps float32 master weights); DDP in float32 gives the same size of gap."""
    pytest.importorskip("deepspeed")
    results = _run_checks(tmp_path, "ddp_float32,deepspeed_zero2,deepspeed_zero3,deepspeed_zero3_fastv")
    for rank in RANKS:
        yardstick = results[rank]["ddp_float32"]
        for stage in (2, 3):
            result = results[rank][f"deepspeed_zero{stage}"]
            assert result["zero_stage"] == stage
            assert result["loss_gap"] <= 1e-5 and result["grad_gap"] <= 1e-5 * max(1.0, result["grad_scale"]), result
            assert result["grad_gap"] <= 3 * max(yardstick["grad_gap"], 1e-7), (result, yardstick)
            assert result["extra_grad_max"] == 0.0  # DeepSpeed reports zeros for unused weights
            assert result["stats_match_union_rows"] and result["visual_tokens"][-1] == LAST_LAYER_KEPT[rank]
        # FastV scores with the layer below the reduction layer: ZeRO-3 gathers its q/k projections
        # when the scorer calls them (module hooks), so no setting is needed, unlike FSDP2.
        fastv = results[rank]["deepspeed_zero3_fastv"]
        assert fastv["loss_gap"] <= 1e-5 and fastv["grad_gap"] <= 1e-5 * max(1.0, fastv["grad_scale"]), fastv
        assert fastv["stats_match_union_rows"]


# -- Trainer + accelerate launch --------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_trainer_under_accelerate_launch_two_processes(tmp_path):
    pytest.importorskip("accelerate")
    _launch([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
             "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
             "--main_process_port", str(_free_port()),
             str(TRAINER_EXAMPLE), "--out", str(tmp_path), "--save"])
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank, report in enumerate(reports):
        assert report["rank"] == rank and report["world_size"] == 2
        assert report["distributed"].endswith("MULTI_CPU")
        losses = report["losses"]
        assert len(losses) == 6 and losses[-1] < 0.9 * losses[0], losses
        assert report["visual_tokens_per_layer"] == [[16, 16], [8, 8], [4, 4], [2, 2]]  # read on this rank
    check = reports[0]["checkpoint"]
    assert check["keys_equal_never_wrapped"]
    assert check["reloaded_loss"] == check["trained_loss"]
    assert check["reloaded_pruned"] == [2, 2]


def test_trainer_with_deepspeed_zero3_on_cpu(tmp_path):
    """TrainingArguments(deepspeed=...) with ZeRO-3 under torchrun; DeepSpeed's CPU accelerator (gloo).

    accelerate finds no accelerator backend on the CPU and counts one process, so the Trainer does not
    shard the data here (each rank reads every sample); DeepSpeed still partitions the parameters and
    reduces the gradients over both ranks, which is what the hooks must survive.
    """
    pytest.importorskip("deepspeed")
    _launch([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
             str(TRAINER_EXAMPLE), "--deepspeed", "3", "--out", str(tmp_path), "--save"])
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank, report in enumerate(reports):
        assert report["rank"] == rank and report["world_size"] == 2
        assert report["distributed"].endswith("DEEPSPEED") and report["zero_stage"] == 3
        losses = report["losses"]
        assert len(losses) == 6 and losses[-1] < 0.9 * losses[0], losses
        assert report["visual_tokens_per_layer"] == [[16, 16], [8, 8], [4, 4], [2, 2]]
    check = reports[0]["checkpoint"]  # 16-bit weights gathered on save (stage3_gather_16bit_weights_on_model_save)
    assert check["keys_equal_never_wrapped"]
    assert check["reloaded_loss"] == check["trained_loss"]


# -- the step-time example under torchrun -----------------------------------------------------
def test_training_example_under_ddp_reports_every_rank(results):
    """`examples/train_with_pyramiddrop.py` under DDP (the docs' step-time numbers come from it)."""
    report = results["rank0"]["timing_example"]
    assert report["written"] and report["model"]["processes"] == 2
    per_rank = report["median_step_s_per_rank"]
    assert len(per_rank) == 2 and per_rank[0] == report["median_step_s"]
    assert all(set(r) == {"dense", "pyramiddrop"} and min(r.values()) > 0 for r in per_rank)
    assert report["schedule"]["visual_tokens_per_layer"] == [16, 8, 4, 2]
    first = report["loss_first_last"]
    assert first["dense"][0] != first["pyramiddrop"][0], "the pruned model trained like the dense one"
    assert results["rank1"]["timing_example"]["median_step_s"] == per_rank[1]
