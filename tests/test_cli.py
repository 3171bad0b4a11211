"""The `tokenprune` command, run in-process: `list`, `demo`, `--version` and its usage errors."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

import tokenprune
from tokenprune.tools.arguments import parse_option
from tokenprune.tools.cli import main


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One short demo run shared by the demo tests (the model build dominates their cost)."""
    path = tmp_path_factory.mktemp("demo") / "demo.json"
    out = io.StringIO()
    threads = torch.get_num_threads()
    with contextlib.redirect_stdout(out):
        code = main(["demo", "--max-new-tokens", "3", "--repeats", "1", "--json", str(path)])
    assert torch.get_num_threads() == threads  # the demo's thread setting must not leak into the caller
    return code, out.getvalue(), json.loads(path.read_text())


def test_list_shows_strategies_and_adapters(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "pyramiddrop" in out and "pdrop" in out
    assert "llava" in out and "llava_onevision" in out
    assert "tokenprune-vlm" in out and "built-in" in out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert tokenprune.__version__ in capsys.readouterr().out


def test_demo_exits_zero_and_keep_all_is_exact(demo_run):
    code, out, data = demo_run
    assert code == 0
    assert "keep-all generation == dense generation: True" in out
    assert "not a benchmark" in out
    assert data["generation"]["keep_all_equals_dense"] is True
    assert data["generation"]["keep_all"] == data["generation"]["dense"]
    assert all(len(ids) == 3 for ids in data["generation"]["dense"])


def test_demo_json_reproduces_paper_flops(demo_run):
    _, out, data = demo_run
    expected = {"strategy", "options", "model", "versions", "layers", "config", "visual_tokens",
                "flops_demo", "flops_llava_1_5_7b", "prefill_seconds", "threads", "generation"}  # fmt: skip
    assert expected <= set(data)
    big = data["flops_llava_1_5_7b"]
    assert round(big["dense_tflops"], 2) == 3.82
    assert round(big["pruned_tflops"], 2) == 1.78
    assert big["layers"] == [8, 16, 24]
    assert "3.82 TFLOPs" in out and "1.78 TFLOPs" in out
    assert data["layers"] == [2, 4, 6]
    assert data["flops_demo"]["pruned"] < data["flops_demo"]["dense"]
    assert set(data["prefill_seconds"]) == {"dense", "wrapped", "repeats"}


def test_demo_visual_tokens_follow_the_default_schedule(demo_run):
    _, _, data = demo_run
    pruned = data["visual_tokens"]["pruned"]
    assert [row[0] for row in pruned] == [576, 576, 288, 288, 144, 144, 72, 72]
    assert all(row == [576, 576] for row in data["visual_tokens"]["dense"])


def test_demo_generation_is_really_pruned(demo_run):
    """generate() must go through the engine too, not only a bare forward."""
    _, out, data = demo_run
    assert data["generation"]["pruned_reduced"] is True
    assert data["generation"]["pruned_visual_tokens_last_layer"] == [72, 72]
    assert "WARNING" not in out


def test_bad_option_value_exits_2_with_message(capsys):
    assert main(["demo", "--option", "ratio=2"]) == 2
    err = capsys.readouterr().err
    assert "ratio=2" in err and "less than or equal to 1" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_unknown_option_lists_valid_ones(capsys):
    assert main(["demo", "--option", "rati=0.3"]) == 2
    err = capsys.readouterr().err
    assert "Unknown option(s) 'rati'" in err and "Did you mean 'ratio'" in err
    assert "Valid options:" in err and "layer_list" in err and "Traceback" not in err


def test_unknown_strategy_exits_2_with_message(capsys):
    assert main(["demo", "--strategy", "pyramidrop"]) == 2
    err = capsys.readouterr().err
    assert "Unknown strategy 'pyramidrop'" in err and "pyramiddrop" in err
    assert "Traceback" not in err


def test_schedule_error_exits_2(capsys):
    assert main(["demo", "--option", "layer_list=[2,4,9]", "--repeats", "1"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_malformed_option_is_a_usage_error(capsys):
    assert main(["demo", "--option", "ratio"]) == 2
    assert "expected key=value" in capsys.readouterr().err


def test_bad_count_is_a_usage_error(capsys):
    assert main(["demo", "--threads", "-1"]) == 2
    assert "must be at least 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("layer_list=[2,4,6]", ("layer_list", [2, 4, 6])),
        ("ratio=0.3", ("ratio", 0.3)),
        ("positions=compact", ("positions", "compact")),
        ("image_token_ratio_list=[0.5, 0.25]", ("image_token_ratio_list", [0.5, 0.25])),
        ("name=a=b", ("name", "a=b")),
    ],
)
def test_parse_option(text, expected):
    assert parse_option(text) == expected


def test_a_closed_pipe_stops_the_output_quietly():
    """`tokenprune list | head -1`: no traceback when the reader leaves early."""
    import subprocess
    import sys

    # ~100 listings overflow the pipe buffer, so the writer is still writing when the reader leaves.
    code = "import sys; from tokenprune.tools.cli import main; sys.exit(max(main(['list']) for _ in range(100)))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader leaves after one line, as `head -1` does
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert first.startswith(b"tokenprune ")
    assert proc.returncode == 1
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


@pytest.mark.parametrize("command", [["flops"], ["bench", "--shape", "tiny", "--quiet"]])
def test_encoder_side_strategies_are_refused_by_the_llm_cost_commands(command, capsys):
    """flops and bench cost LLM-side schedules only: a projector-side strategy gets a clear error, not a traceback."""
    assert main([*command, "--strategy", "visionzip"]) == 2
    err = capsys.readouterr().err
    assert "'visionzip' reduces tokens in the vision encoder or at the projector" in err
    assert "LLM-side strategy" in err


def test_python_dash_m_tokenprune_runs_the_command():
    """``python -m tokenprune`` is the console script, for environments without it on PATH."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "tokenprune", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"tokenprune {tokenprune.__version__} (tokenprune-vlm)"
    done = subprocess.run([sys.executable, "-m", "tokenprune", "flops", "--strategy", "nope"], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "nope" in done.stderr  # the usage-error exit status reaches the shell
