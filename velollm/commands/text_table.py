"""Ollama's CLI tables (tablewriter without borders, `SetTablePadding("    ")`): columns padded to their
widest cell and four spaces apart, no trailing spaces, nothing cut (a pipe gets whole names)."""

from __future__ import annotations

from collections.abc import Sequence

PADDING = "    "


def text_table(rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """One line per row; `indent` before each (ollama show's rows sit under their title)."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [(indent + PADDING.join(c.ljust(w) for c, w in zip(row, widths))).rstrip() for row in rows]
