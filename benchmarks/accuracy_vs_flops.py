"""Accuracy vs. visual FLOPs of the shipped tiny VQA LLaVA: a thin runner around ``tokenprune eval``.

Dense and every registered strategy (each over its budget option's grid) on the easy-VQA and
Grid-Shapes test splits; writes ``benchmarks/results/accuracy-vs-flops.{json,png,md}`` (also
copied to ``docs/results/accuracy-vs-flops.png`` for the docs page). Extra arguments go to
``tokenprune eval`` (e.g. ``--limit 1000`` for a quicker run, ``--strategy pyramiddrop``).

    python benchmarks/accuracy_vs_flops.py                 # full test splits
    python benchmarks/accuracy_vs_flops.py --limit 1000    # first 1000 questions of each

The tiny model has 6 decoder layers, so unless ``--option`` is given the runner moves the
strategies' reduction layers to fit it (`SHALLOW_OPTIONS`): single-drop strategies drop after
layer 1 instead of 2 (with K=2, two of six layers stay dense and no budget below a third of the
FLOPs is reachable), and SparseVLM drops before layers 1, 2 and 4 instead of 3, 7 and 16.
FLOPs budgets are solved on the model itself (``tokenprune eval`` sets each strategy's
``reference`` to the model's path).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tokenprune.tools.cli import main

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SHALLOW_OPTIONS = ("fastv.k=1", "dart.layer=1", "random.layer=1", "uniform.layer=1", "sparsevlm.layer_list=[1,2,4]")
"""Reduction layers that fit the 6-layer tiny model (used when no ``--option`` is given)."""

if __name__ == "__main__":
    RESULTS.mkdir(exist_ok=True)
    json_path, png_path = RESULTS / "accuracy-vs-flops.json", RESULTS / "accuracy-vs-flops.png"
    args = sys.argv[1:]
    if "--option" not in args:
        args += [a for option in SHALLOW_OPTIONS for a in ("--option", option)]
    code = main(["eval", "--json", str(json_path), "--plot", str(png_path), *args])
    if code == 0:
        import json

        from tokenprune.tools.vqa.evaluate import markdown_table, summary_table

        shutil.copyfile(png_path, ROOT / "docs" / "results" / "accuracy-vs-flops.png")
        result = json.loads(json_path.read_text())
        (RESULTS / "accuracy-vs-flops.md").write_text(
            "## At about half and a quarter of the visual FLOPs\n\n" + summary_table(result)
            + "\n\n## Every run\n\n" + markdown_table(result) + "\n"
        )
    sys.exit(code)
