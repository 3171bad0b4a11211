"""Plain-text tables and number formats for the ``tokenprune`` reports.

Hand-rolled (no colour or table library) so a report reads the same in a terminal, a CI log and a
bug report, and the CLI needs nothing beyond the library's own dependencies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["format_table", "plural", "layers_text", "format_ms", "format_bytes", "format_speedup"]


def format_table(rows: Sequence[Sequence[Any]], header_rows: int = 1, indent: str = "  ") -> str:
    """Align columns: numbers right, text left, a rule under the header rows.

    Hand-rolled so the CLI has no dependency beyond the library's own.
    """
    cells = [[_cell(v) for v in row] for row in rows]
    width = max(len(row) for row in cells)
    cells = [row + [""] * (width - len(row)) for row in cells]
    sizes = [max(len(row[i]) for row in cells) for i in range(width)]
    numeric = [all(_is_number(row[i]) for row in cells[header_rows:] if row[i]) for i in range(width)]
    lines = [_join(row, sizes, numeric, indent) for row in cells]
    if header_rows:
        titled = [any(row[i] for row in cells[:header_rows]) for i in range(width)]
        rule = "  ".join(("-" if t else " ") * s for s, t in zip(sizes, titled))
        lines.insert(header_rows, (indent + rule).rstrip())
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:,.1f}" if isinstance(value, float) else str(value)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", "").rstrip("%x"))
    except ValueError:
        return False
    return True


def _join(row: Sequence[str], sizes: Sequence[int], numeric: Sequence[bool], indent: str) -> str:
    parts = [c.rjust(s) if num else c.ljust(s) for c, s, num in zip(row, sizes, numeric)]
    return (indent + "  ".join(parts)).rstrip()


def plural(n: int, word: str, plural: str) -> str:
    """``"1 thread"`` / ``"2 threads"``."""
    return f"{n} {word if n == 1 else plural}"


def layers_text(layers: Sequence[int]) -> str:
    """Reduction layers as ``"2, 4, 6"``, or ``"(none)"`` for a schedule that never reduces."""
    return ", ".join(map(str, layers)) or "(none)"


def format_ms(seconds: float) -> str:
    """Seconds as milliseconds with one decimal."""
    return f"{seconds * 1e3:.1f} ms"


def format_bytes(n: float | None) -> str:
    """Bytes in the largest binary unit that keeps the number >= 1 (``"-"`` for unknown)."""
    if n is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def format_speedup(x: float | None) -> str:
    """A ratio as ``"1.23x"`` (``"-"`` when unknown)."""
    return "-" if x is None else f"{x:.2f}x"
