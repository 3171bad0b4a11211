"""`tokenprune bench --video` and `tokenprune visualize --video`: measured video prompts and frame strips.

The benchmark runs on a tiny build of each video family (1/16 width, 4 layers, 2 tower blocks, a
1,000-word vocabulary) and must report dense and wrapped TTFT / TPOT next to the FLOPs-ideal that
`tokenprune.video_cost` gives for the same video and strategy; the strip is read back from the PNG,
cell by cell, and must show exactly the tokens the wrapped forward kept.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tokenprune import get_registry, pruned
from tokenprune.cost import ModelDims
from tokenprune.tools.cli import main
from tokenprune.video_cost import VideoShape, video_cost

TINY = ["--scale", "16", "--layers", "4", "--vision-layers", "2", "--vocab", "1000", "--repeats", "1", "--warmup", "0",
        "--new-tokens", "3", "--quiet"]  # fmt: skip


def _bench(tmp_path, shape: str, video: str, strategy: str, *options: str) -> dict:
    path, png = tmp_path / "bench.json", tmp_path / "bench.png"
    argv = ["bench", "--shape", shape, "--video", video, "--strategy", strategy, *TINY, "--json", str(path), "--plot", str(png)]
    for option in options:
        argv += ["--option", option]
    assert main(argv) == 0
    assert png.stat().st_size > 1000
    return json.loads(path.read_text())


def _check_timings(r: dict) -> None:
    p, d = r["prefill"], r["decode"]
    for key in ("dense_s", "wrapped_s", "llm_dense_s", "llm_wrapped_s"):
        assert p[key] > 0
    assert p["speedup"] == pytest.approx(p["dense_s"] / p["wrapped_s"])
    assert d["dense_s_per_token"] > 0 and d["wrapped_s_per_token"] > 0 and d["generated_tokens"] == 3
    assert [m["metric"] for m in r["metrics"]][:3] == ["TTFT (whole forward)", "prefill (language model)", "TPOT (decode per token)"]


def test_bench_video_times_a_temporal_strategy_next_to_its_flops_ideal(tmp_path):
    r = _bench(tmp_path, "qwen2.5-vl-7b", "8x112x112", "evs", "ratio=0.5")
    _check_timings(r)
    sh = r["shape"]
    assert sh["class"] == "Qwen2_5_VLForConditionalGeneration" and sh["grid"] == [4, 4, 4] and sh["visual_tokens"] == 64
    kept = get_registry().build("evs", ratio=0.5).projector.kept_count(64, (4, 4, 4))
    assert r["flops"]["llm_visual_tokens"] == kept < 64
    assert r["prefill"]["tokens_per_layer"]["projector"] == [kept]  # the wrapped forward kept what the cost model counts
    dims = ModelDims(num_layers=4, hidden_size=sh["hidden"], intermediate_size=sh["intermediate"], num_heads=sh["heads"],
                     num_kv_heads=sh["kv_heads"], vocab_size=1000)  # the model as built: 1/16 width, 4 layers  # fmt: skip
    ideal = video_cost(dims, "qwen2.5-vl", VideoShape(8, 112, 112), get_registry().build("evs", ratio=0.5),
                       text_tokens=sh["text_tokens"])["full"]["ideal_speedup"]  # fmt: skip
    assert r["prefill"]["llm_ideal_speedup"] == pytest.approx(ideal, rel=0.02)  # LLM only: no LM-head token
    assert r["prefill"]["ideal_speedup"] < r["prefill"]["llm_ideal_speedup"]  # the tower runs on every frame either way
    kv = r["kv_cache_bytes"]
    assert kv["ratio"] == pytest.approx(kv["model_ratio"])  # the real cache holds the counted positions


def test_bench_video_runs_an_llm_side_strategy_on_onevision(tmp_path):
    r = _bench(tmp_path, "llava-onevision-7b", "4x112x112", "pyramiddrop", "layer_list=[1,2,3]")
    _check_timings(r)
    assert r["shape"]["class"] == "LlavaOnevisionForConditionalGeneration"
    assert r["shape"]["visual_tokens"] == 4 * 14 * 14 + 1  # every frame at 384 px, 2x2 pooled, one newline
    llm = r["prefill"]["tokens_per_layer"]["llm"]
    assert [row[0] for row in llm] == r["flops"]["visual_tokens_per_layer"]
    assert r["prefill"]["llm_ideal_speedup"] > 1.5


def test_bench_video_runs_a_temporal_strategy_on_onevision(tmp_path):
    r = _bench(tmp_path, "llava-onevision-7b", "4x112x112", "evs", "ratio=0.5")
    _check_timings(r)
    grid = 4 * 14 * 14  # every frame at 384 px, 2x2 pooled; the newline after it stays
    kept = get_registry().build("evs", ratio=0.5).projector.kept_count(grid, (4, 14, 14)) + 1
    assert r["flops"]["llm_visual_tokens"] == kept < grid + 1
    assert r["prefill"]["tokens_per_layer"]["projector"] == [kept]  # the wrapped forward kept what the cost model counts


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--strategy", "evs"], "'evs' selects video tokens across frames, and --shape llava-1.5-7b prompts hold still images"),
        (["--shape", "qwen2-vl-7b", "--video", "17x112x112"], "17 frames do not fill whole temporal patches of 2 frames"),
        (["--shape", "qwen2-vl-7b", "--video", "10x112x112x4", "--strategy", "evs"], "give a multiple of 4 (e.g. 12)"),
        (["--shape", "qwen2-vl-7b", "--video", "2x112x112"], "at least two temporal patches"),
        (["--shape", "llava-1.5-7b", "--video", "8x112x112"], "--video needs a video model shape"),
        (["--shape", "llava-onevision-7b", "--video", "8x112x112", "--strategy", "divprune"],
         "LLaVA-OneVision's images (AnyRes crops, unpadded, with newline features) cannot be reduced"),
        (["--shape", "llava-onevision-7b", "--video", "8x112x112x2"], "no temporal patch"),
        (["--video", "8x112"], "write FRAMESxHEIGHTxWIDTH"),
        (["--video", "8x112x112", "--modes", "eager"], "drop --modes"),
    ],
)
def test_bench_video_bad_input_is_a_clear_usage_error(argv, message, capsys):
    assert main(["bench", *argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# -- visualize --video --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def video_model(tmp_path_factory):
    """A random-weight Moving-Shapes model saved as examples/train_tiny_video_vqa.py saves one."""
    from transformers import Qwen2VLForConditionalGeneration

    from tokenprune.vqa_video.model import TinyVideoVQA, Vocab, build_config

    vocab = Vocab.default()
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("video-model")
    TinyVideoVQA(Qwen2VLForConditionalGeneration(build_config(vocab)).eval(), vocab).save(path)
    return path


def _kept_by_the_model(path, strategy: str, options: dict, index: int) -> list[set[tuple[int, int, int]]]:
    """The (t, row, col) of every video token each stage kept, read from the handle of a wrapped forward."""
    from tokenprune.vqa_video import moving_shapes as ms
    from tokenprune.vqa_video.evaluate import VIDEO_GRID
    from tokenprune.vqa_video.model import TinyVideoVQA

    vqa = TinyVideoVQA.load(path)
    test = ms.split("test")
    inputs = vqa.encode([ms.render(test.videos[test.video_index[index]])], [test.questions[index].text])
    video_cols = (inputs["input_ids"][0] == vqa.vocab.id("<|video_pad|>")).nonzero()[:, 0].tolist()
    cell = {c: tuple(int(x) for x in np.unravel_index(k, VIDEO_GRID)) for k, c in enumerate(video_cols)}
    with pruned(vqa.model, strategy, **options) as handle, torch.no_grad():
        vqa.model(**inputs)
        columns = handle.input_columns()[0].tolist()
        selection = handle.selection()
    stages = [{cell[c] for c in columns if c in cell}]
    for _, idx, valid in selection[1:]:
        stages.append({cell[columns[s]] for s, ok in zip(idx[0].tolist(), valid[0].tolist()) if ok and columns[s] in cell})
    return stages


def _kept_in_the_png(png, frames: np.ndarray, stages: int) -> list[set[tuple[int, int, int]]]:
    """Read the strip back: a cell drawn as the frame is kept, one drawn dimmed is dropped."""
    from PIL import Image

    from tokenprune.vqa_video.evaluate import VIDEO_GRID
    from tokenprune.vqa_video.frame_strips import StripLayout, dim
    from tokenprune.vqa_video.model import TEMPORAL_PATCH

    t, rows, cols = VIDEO_GRID
    pixels = np.asarray(Image.open(png).convert("RGB"))
    layout = StripLayout(stages, t, frames.shape[1] * 3, frames.shape[2] * 3)
    assert pixels.shape[:2] == layout.size
    ch, cw = layout.panel_h // rows, layout.panel_w // cols
    found = []
    for s in range(stages):
        kept = set()
        for k in range(t):
            top, left = layout.panel_box(s, k)
            frame = frames[k * TEMPORAL_PATCH].repeat(3, axis=0).repeat(3, axis=1)
            for r in range(rows):
                for c in range(cols):
                    drawn = pixels[top + r * ch : top + (r + 1) * ch, left + c * cw : left + (c + 1) * cw]
                    original = frame[r * ch : (r + 1) * ch, c * cw : (c + 1) * cw]
                    is_kept, is_dim = np.array_equal(drawn, original), np.array_equal(drawn, dim(original))
                    assert is_kept != is_dim, (s, k, r, c)  # every cell is one or the other, never ambiguous
                    if is_kept:
                        kept.add((k, r, c))
        found.append(kept)
    return found


def test_visualize_video_draws_exactly_the_kept_tokens(video_model, tmp_path, capsys):
    from tokenprune.vqa_video import moving_shapes as ms

    png = tmp_path / "strip.png"
    options = {"temporal": "evs", "temporal_ratio": 0.5, "layer_list": [1, 2, 3]}
    argv = ["visualize", "--video", str(video_model), "--index", "7", "--strategy", "temporal_pyramiddrop", "--out", str(png),
            "--threads", "1"] + [a for k, v in options.items() for a in ("--option", f"{k}={json.dumps(v)}")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    expected = _kept_by_the_model(video_model, "temporal_pyramiddrop", options, 7)
    assert len(expected) == 4 and len(expected[0]) == 162 and len(expected[-1]) < len(expected[1])
    assert "projector: 162/324 video tokens kept" in out and "layers 3-3:" in out
    test = ms.split("test")
    frames = ms.render(test.videos[test.video_index[7]])
    assert _kept_in_the_png(png, frames, len(expected)) == expected


def test_visualize_video_errors(video_model, tmp_path, capsys):
    assert main(["visualize", "--video", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert "no video model there" in capsys.readouterr().err
    assert main(["visualize", "--video", str(video_model), "--image", "a.png", "--question", "q"]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert main(["visualize", "--video", str(video_model), "--index", "3000"]) == 2
    assert "out of range" in capsys.readouterr().err


# -- accuracy vs. FLOPs picture -------------------------------------------------------------------
def test_the_accuracy_plot_redraws_from_the_committed_sweep(tmp_path):
    """benchmarks/video_accuracy_plot.py reads only the sweep's JSON, so it re-runs after every sweep."""
    import importlib.util
    from pathlib import Path

    from tokenprune.vqa_video.sweep_plot import plot_video_sweep

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "video_accuracy_plot.py"
    spec = importlib.util.spec_from_file_location("video_accuracy_plot", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(["--out", str(tmp_path / "plot.png")])
    assert out.stat().st_size > 10_000
    run = {"strategy": "evs", "flops_fraction": 0.5, "all": 0.8, "direction": 0.9, "questions": 10}
    with pytest.raises(ValueError, match="no dense run"):
        plot_video_sweep({"runs": [run]}, tmp_path / "x.png")
    dense = {**run, "strategy": "dense", "flops_fraction": 1.0}
    assert plot_video_sweep({"runs": [dense, run], "chance": {"direction": 0.25}}, tmp_path / "y.png").is_file()
