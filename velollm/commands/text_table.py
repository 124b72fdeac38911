"""Ollama's CLI tables: tablewriter v0.0.5 as cmd.go sets it up (no borders, `SetNoWhiteSpace(true)`,
`SetTablePadding("    ")`, left-aligned, auto-wrap on as tablewriter's default). Columns are padded to their widest
cell and four spaces apart; a cell wider than the column width (tablewriter's MAX_ROW_WIDTH, 30; `ollama show`
gives its System and License tables 100) is reflowed into one paragraph and wrapped at its spaces (cell_wrap), and
the other cells of its row go on below as blank lines. Lines end without tablewriter's trailing spaces."""

from __future__ import annotations

from collections.abc import Sequence

from velollm.commands.cell_wrap import cell_width, wrap_string

PADDING = "    "
COLUMN_WIDTH = 30  # tablewriter.MAX_ROW_WIDTH
_BLANK = "  "  # printRow's filler for a cell with fewer lines than its row: two spaces, even in a narrower column


def text_table(rows: Sequence[Sequence[str]], column_width: int = COLUMN_WIDTH) -> list[str]:
    """The printed lines of `rows` (the header, where there is one, is the first row); rows may differ in length,
    as `ollama show`'s Parameters rows do."""
    cells = [[_cell(text, column_width) for text in row] for row in rows]
    widths: dict[int, int] = {}
    for row in cells:
        for i, (_, width) in enumerate(row):
            widths[i] = max(widths.get(i, 0), width)
    out = []
    for row in cells:
        for x in range(max((len(lines) for lines, _ in row), default=0)):
            texts = (lines[x] if x < len(lines) else _BLANK for lines, _ in row)
            out.append("".join(_pad(t, widths[i]) + PADDING for i, t in enumerate(texts)).rstrip())
    return out


def _cell(text: str, column_width: int) -> tuple[list[str], int]:
    """tablewriter's parseDimension: a cell's lines and the width it claims for its column. The width is its widest
    line, capped at `column_width`, or its widest word where that is wider; its lines are joined (reflowed) and
    wrapped at that width."""
    width = min(max(cell_width(line) for line in text.split("\n")), column_width)
    lines = wrap_string(" ".join(text.split("\n")), width)
    return lines, max(width, *(cell_width(line) for line in lines))


def _pad(text: str, width: int) -> str:
    return text + " " * (width - cell_width(text))
