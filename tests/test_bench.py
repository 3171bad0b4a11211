"""`tokenprune flops` and `tokenprune bench`: the CLI numbers, a tiny measured run, its JSON and plot."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from tokenprune.tools import bench
from tokenprune.tools.cli import main
from tokenprune.cost import ModelDims, estimate
from tokenprune.registry import get_registry


def _run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


# -- flops ------------------------------------------------------------------------------------
def test_flops_json_prints_the_paper_numbers():
    code, out, _ = _run_cli(["flops", "--model", "llava-1.5-7b", "--json"])
    assert code == 0
    data = json.loads(out)
    assert round(data["dense_tflops"], 2) == 3.82 and round(data["pruned_tflops"], 2) == 1.78
    assert data["avg_visual_tokens"] == 270.0
    assert data["saving"] == pytest.approx(0.534, abs=1e-3)
    assert data["kv_cache_bytes"]["pruned"] < data["kv_cache_bytes"]["dense"]
    assert data["layers"] == [8, 16, 24] and data["keep"] == [288, 144, 72]
    assert data["full"]["dense_tflops"] >= data["dense_tflops"]


def test_flops_table_and_options():
    code, out, _ = _run_cli(["flops", "--option", "layer_list=[2]", "--option", "image_token_ratio_list=[0.5]"])
    assert code == 0
    assert "3.82" in out and "2.01" in out and "576 -> 288" in out and "KV cache" in out
    code, out, _ = _run_cli(["flops", "--model", "llava-next-7b", "--option", "ratio=0.4", "--json"])
    assert float(f"{json.loads(out)['pruned_tflops']:.3g}") == 8.22


def test_flops_reads_a_local_config(tmp_path):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14)  # fmt: skip
    text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32)  # fmt: skip
    LlavaConfig(vision_config=vision, text_config=text, image_seq_length=576).save_pretrained(tmp_path)
    for model in (str(tmp_path), str(tmp_path / "config.json")):
        code, out, _ = _run_cli(["flops", "--model", model, "--json"])
        assert code == 0
        data = json.loads(out)
        assert data["visual_tokens"] == 576 and round(data["pruned_tflops"], 2) == 1.78


def test_flops_usage_errors():
    code, _, err = _run_cli(["flops", "--model", "no-such-model"])
    assert code == 2 and "preset" in err
    code, _, err = _run_cli(["flops", "--option", "ratio=3"])
    assert code == 2 and "ratio" in err
    code, _, err = _run_cli(["flops", "--option", "layer_list=[40]"])
    assert code == 2 and "out of range" in err


# -- bench ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    """One tiny measured run through the CLI (seconds): JSON and PNG written."""
    out_dir = tmp_path_factory.mktemp("bench")
    json_path, png_path = out_dir / "tiny.json", out_dir / "tiny.png"
    threads = torch.get_num_threads()
    code, out, err = _run_cli([
        "bench", "--shape", "tiny", "--repeats", "1", "--warmup", "1", "--new-tokens", "3", "--threads", "1", "--length-scaling",
        "--json", str(json_path), "--plot", str(png_path),
    ])  # fmt: skip
    assert torch.get_num_threads() == threads  # the thread setting must not leak
    return code, out, err, json.loads(json_path.read_text()), png_path


def test_bench_writes_json_and_plot(tiny_bench):
    code, out, err, data, png = tiny_bench
    assert code == 0
    expected = {"strategy", "options", "layers", "schedule", "shape", "environment", "protocol", "flops", "prefill",
                "overhead", "kv_cache_bytes", "decode", "train", "memory", "metrics", "length_scaling"}  # fmt: skip
    assert expected <= set(data)
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "[bench] prefill" in err  # progress lines
    assert "FLOPs-ideal" in out and "Engine overhead" in out


def test_bench_numbers_are_sane(tiny_bench):
    _, _, _, data, _ = tiny_bench
    for row in data["metrics"]:
        assert row["measured"] > 0, row
    for key in ("speedup", "llm_speedup", "ideal_speedup", "llm_ideal_speedup"):
        assert data["prefill"][key] > 0
    assert data["decode"]["speedup"] > 0 and data["train"]["speedup"] > 0
    assert data["train"]["loss_finite"]
    assert data["decode"]["generated_tokens"] == 3
    assert data["overhead"]["hook_s"] > 0
    kv = data["kv_cache_bytes"]
    assert kv["wrapped"] < kv["dense"]
    assert kv["dense"] == kv["model_dense"] and kv["wrapped"] == kv["model_wrapped"]  # real cache == the model
    assert data["prefill"]["visual_tokens_per_layer"] == [[576], [288], [144], [72]]
    scaling = data["length_scaling"]
    assert scaling["achievable_speedup"] > 0
    assert scaling["layers_per_length"] == {"592": 1, "304": 1, "160": 1, "88": 1}
    mem = data["memory"]
    assert mem["prefill"]["dense_bytes"] > 0 and mem["train"]["dense_bytes"] > 0


def test_bench_ideal_speedup_matches_the_cost_model(tiny_bench):
    _, _, _, data, _ = tiny_bench
    shape = bench.resolve_shape("tiny")
    dims = ModelDims.from_config(bench.build_config(shape))
    schedule = get_registry().build("pyramiddrop").scheduler.plan(dims.num_layers, [shape.visual_tokens])
    llm = estimate(dims, schedule, visual_tokens=shape.visual_tokens, text_tokens=shape.text_tokens, lm_head_tokens=0)
    whole = estimate(dims, schedule, visual_tokens=shape.visual_tokens, text_tokens=shape.text_tokens)
    assert data["prefill"]["llm_ideal_speedup"] == pytest.approx(llm.ideal_speedup)
    assert data["prefill"]["ideal_speedup"] == pytest.approx(whole.ideal_speedup_with_vision)
    assert data["flops"]["layers"] == [1, 2, 3]


def test_true_7b_shape_constructs_on_meta():
    """The GPU path's model (true LLaVA-1.5-7B shape, bf16) builds; on meta it costs no memory."""
    shape = bench.resolve_shape("llava-1.5-7b", device="cuda")
    assert (shape.layers, shape.hidden, shape.intermediate, shape.heads, shape.visual_tokens) == (
        32,
        4096,
        11008,
        32,
        576,
    )
    model = bench.build_model(shape, device="meta", dtype=torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    assert 7.0e9 < params < 7.2e9
    assert next(model.parameters()).dtype == torch.bfloat16
    assert bench.resolve_shape("llava-next-7b", device="cuda").visual_tokens == 2880
    cpu = bench.resolve_shape("llava-1.5-7b", device="cpu")
    assert (cpu.hidden, cpu.intermediate, cpu.heads, cpu.layers) == (1024, 2752, 16, 32)


def test_bench_usage_errors():
    code, _, err = _run_cli(["bench", "--shape", "tiny", "--new-tokens", "1", "--quiet"])
    assert code == 2 and "new_tokens" in err
    code, _, err = _run_cli(["bench", "--shape", "nope", "--quiet"])
    assert code == 2 and "Unknown benchmark shape" in err
    if not torch.cuda.is_available():
        code, _, err = _run_cli(["bench", "--shape", "tiny", "--device", "cuda", "--quiet"])
        assert code == 2 and "cuda" in err
