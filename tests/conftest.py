"""Test configuration: tiny model factories on the path, and the exactness report.

The exactness tests record the largest difference they measure per check and cell; the terminal
summary prints the worst per check and writes ``artifacts/exactness.json`` (the numbers quoted in
release notes come from there).
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))  # lets tests `import tiny_models`

from exactness import MEASURED  # noqa: E402


def pytest_terminal_summary(terminalreporter):
    if not MEASURED:
        return
    out = pathlib.Path(__file__).parent.parent / "artifacts" / "exactness.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(MEASURED, indent=1, sort_keys=True))
    terminalreporter.section("exactness: largest measured differences")
    for check, cells in sorted(MEASURED.items()):
        for backend in ("sdpa", "eager"):
            values = {cell: v for cell, v in cells.items() if f"-{backend}-" in cell}
            if values:
                worst = max(values, key=values.get)
                terminalreporter.write_line(
                    f"{check:<28} {backend:<6} cells={len(values):<3} max={values[worst]:.3g}  ({worst})"
                )
    terminalreporter.write_line(f"written to {out}")
