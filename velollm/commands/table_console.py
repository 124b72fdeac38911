"""The rich Console the CLI prints its tables on (`ps`, `show`, `list`)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

_PIPED_WIDTH = 10_000  # wide enough for any row: a table narrows to its content, not to this


def table_console() -> Console:
    """On a terminal, its width; piped (`velollm ps | awk ...`), no cell is cut or wrapped to 80
    columns, as Ollama's tabwriter never cuts a name."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=_PIPED_WIDTH)
