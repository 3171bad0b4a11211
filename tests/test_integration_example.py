"""`examples/train_with_pyramiddrop.py` runs and reports what it measured (a tiny shape, 2 steps).

Speed is measured by the script, not asserted here; this checks that the report is complete and
that the two trained models were the dense and the pruned one.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train_with_pyramiddrop.py"


def test_training_example_reports_step_times(tmp_path):
    spec = importlib.util.spec_from_file_location("train_with_pyramiddrop", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "report.json"
    args = ["--hidden", "64", "--layers", "4", "--image-side", "4", "--prompt-tokens", "4", "--answer-tokens", "2",
            "--batch", "1", "--samples", "2", "--steps", "2", "--warmup", "0", "--json", str(out)]
    report = module.main(args)
    assert json.loads(out.read_text()) == report
    assert report["schedule"]["layers"] == [1, 2, 3]  # the paper recipe (4 stages) on 4 layers
    assert report["schedule"]["visual_tokens_per_layer"] == [16, 8, 4, 2]
    assert set(report["median_step_s"]) == {"dense", "pyramiddrop"}
    assert all(t > 0 for t in report["median_step_s"].values())
    assert report["step_time_reduction"] == 1 - report["median_step_s"]["pyramiddrop"] / report["median_step_s"]["dense"]
    assert 0.4 < report["flops_ideal_reduction"] < 0.6
    first = report["loss_first_last"]
    assert abs(first["dense"][0] - first["pyramiddrop"][0]) > 0, "the pruned model trained like the dense one"
