"""How a table cell wraps in Ollama's CLI: tablewriter v0.0.5's WrapString (wrap.go), which breaks at single
spaces with minimal raggedness (not greedily), and never inside a word: a word wider than the limit raises the
limit to its width, so a model name, which has no spaces, is never broken."""

from __future__ import annotations

_PENALTY = 100_000  # wrap.go defaultPenalty: what a line wider than the limit adds to the cost


def cell_width(text: str) -> int:
    """Columns `text` takes in a terminal (go-runewidth's StringWidth: wide characters count two)."""
    from rich.cells import cell_len  # not at import: `velollm --help` stays fast

    return cell_len(text)


def wrap_string(text: str, limit: int) -> list[str]:
    """tablewriter.WrapString: `text` (newlines as spaces) in lines of at most `limit` columns, or of its widest
    word where that is wider."""
    words = text.replace("\n", " ").split(" ")
    widths = [cell_width(w) for w in words]
    limit = max(limit, *widths)
    return [" ".join(words[i:j]) for i, j in _breaks(widths, limit)]


def _breaks(widths: list[int], limit: int) -> list[tuple[int, int]]:
    """tablewriter.WrapWords' line breaks, as (first, end) word indices: the cost of a line is the square of what it
    leaves of `limit` (0 for the last line), the breaks those of least total cost, the earliest break on a tie."""
    n = len(widths)
    starts = [0]
    for w in widths:
        starts.append(starts[-1] + w + 1)  # a line of words i..j-1 is starts[j] - starts[i] - 1 wide
    cost, end = [0] * (n + 1), [n] * n
    for i in range(n - 1, -1, -1):
        if starts[n] - starts[i] - 1 <= limit:
            cost[i] = 0
            continue
        cost[i] = 2**31 - 1  # Go's math.MaxInt32
        for j in range(i + 1, n):
            length = starts[j] - starts[i] - 1
            c = (limit - length) ** 2 + cost[j] + (_PENALTY if length > limit else 0)
            if c < cost[i]:
                cost[i], end[i] = c, j
            elif length > limit and (length - limit) ** 2 + _PENALTY >= cost[i]:
                break  # longer lines only cost more from here on: exactly Go's choice, without its n² walk
    lines, i = [], 0
    while i < n:
        lines.append((i, end[i]))
        i = end[i]
    return lines
