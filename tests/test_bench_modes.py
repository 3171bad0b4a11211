"""The engine-modes benchmark runs end to end on the tiny shape and reports what it promises."""

from __future__ import annotations

import json

import pytest

from tokenprune.tools.bench_modes import generate_kwargs, plot, render, run_modes


def test_run_modes_reports_ttft_tpot_e2e_per_mode(tmp_path):
    result = run_modes(shape="tiny", modes=["eager", "static"], new_tokens=3, repeats=1, warmup=0)
    assert set(result["modes"]) == {"eager", "static"}
    for metrics in result["modes"].values():
        assert set(metrics) == {"ttft", "tpot", "e2e"}
        for m in metrics.values():
            assert m["dense_s"] > 0 and m["wrapped_s"] > 0
            assert m["speedup"] == pytest.approx(m["dense_s"] / m["wrapped_s"])
            assert m["ideal_speedup"] > 1.0  # the default schedule removes visual tokens
    assert result["modes"]["eager"]["ttft"]["ideal_speedup"] > result["modes"]["eager"]["tpot"]["ideal_speedup"]
    json.dumps(result)  # JSON-ready
    assert "static" in render(result)
    assert (tmp_path / "modes.png").exists() is False
    plot(result, str(tmp_path / "modes.png"))
    assert (tmp_path / "modes.png").stat().st_size > 1000


def test_generate_kwargs_of_each_mode():
    assert generate_kwargs("eager", "cpu") == {}
    assert generate_kwargs("static", "cpu") == {"cache_implementation": "static"}
    compiled = generate_kwargs("compiled", "cpu")
    assert compiled["cache_implementation"] == "static" and compiled["compile_config"].fullgraph
    assert compiled["compile_config"]._compile_all_devices  # on CPU transformers compiles only when asked
    assert generate_kwargs("compiled", "cuda")["compile_config"].mode == "reduce-overhead"
    with pytest.raises(ValueError, match="Unknown mode 'fast'"):
        generate_kwargs("fast", "cpu")


def test_cli_bench_modes_writes_json(tmp_path, capsys):
    from tokenprune.tools.cli import main

    out = tmp_path / "modes.json"
    assert main(["bench", "--shape", "tiny", "--modes", "eager", "--repeats", "1", "--new-tokens", "2",
                 "--warmup", "0", "--quiet", "--json", str(out)]) == 0  # fmt: skip
    assert "eager" in capsys.readouterr().out
    assert set(json.loads(out.read_text())["modes"]) == {"eager"}
    assert main(["bench", "--modes", "eager,fast"]) == 2
    assert "Unknown mode(s) ['fast']" in capsys.readouterr().err
