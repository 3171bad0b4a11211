"""Accuracy vs. visual FLOPs of the shipped tiny VQA LLaVA: a thin runner around ``tokenprune eval``.

Dense and every registered strategy (each over its budget option's grid) on the easy-VQA and
Grid-Shapes test splits; writes ``benchmarks/results/accuracy-vs-flops.{json,png,md}`` (also
copied to ``docs/results/accuracy-vs-flops.png`` for the docs page). Extra arguments go to
``tokenprune eval`` (e.g. ``--limit 1000`` for a quicker run, ``--strategy pyramiddrop``).

    python benchmarks/accuracy_vs_flops.py                 # full test splits
    python benchmarks/accuracy_vs_flops.py --limit 1000    # first 1000 questions of each
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tokenprune.cli import main

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

if __name__ == "__main__":
    RESULTS.mkdir(exist_ok=True)
    json_path, png_path = RESULTS / "accuracy-vs-flops.json", RESULTS / "accuracy-vs-flops.png"
    code = main(["eval", "--json", str(json_path), "--plot", str(png_path), *sys.argv[1:]])
    if code == 0:
        import json

        from tokenprune.vqa.evaluate import markdown_table

        shutil.copyfile(png_path, ROOT / "docs" / "results" / "accuracy-vs-flops.png")
        (RESULTS / "accuracy-vs-flops.md").write_text(markdown_table(json.loads(json_path.read_text())) + "\n")
    sys.exit(code)
