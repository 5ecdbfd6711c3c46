"""Markdown tables for the result files every CLI and experiment writes."""

from __future__ import annotations

from collections.abc import Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured table; cells are written with str(), so format numbers before. A row whose length differs
    from the header's is a ValueError (a shifted column would misreport every figure after it)."""
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row {list(row)!r} has {len(row)} cells for {len(header)} columns {list(header)!r}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
