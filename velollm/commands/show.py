"""`velollm show MODEL`: a model's facts from the server at $VELOLLM_HOST (Ollama's `ollama show`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from velollm.commands.client import ServerClient, server_command
from velollm.commands.text_table import COLUMN_WIDTH, text_table
from velollm.wire.go_format import go_value

_PARTS = ("license", "modelfile", "parameters", "system", "template")
_ARRAY_WIDTH = 10  # Ollama's showInfo: a list shows the items that fit in 10 columns
_TEXT_WIDTH = 100  # showInfo's SetColWidth(100) for its System and License tables (30 for the others)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("show", help="show a model's architecture, parameters, template and license")
    parser.add_argument("model")
    for part in _PARTS:
        parser.add_argument(f"--{part}", action="store_true", help=f"print only the {part}")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="the model's metadata and tensors too (name, type, shape)")
    parser.add_argument("--json", action="store_true", help="the /api/show answer as JSON")
    parser.set_defaults(run=server_command(run))


def _info(info: dict[str, Any], suffix: str) -> Any:
    arch = info.get("general.architecture", "")
    return info.get(f"{arch}.{suffix}")


def model_section(show: dict[str, Any]) -> list[tuple[str, str]]:
    """Ollama's "Model" block: architecture, parameters, context length, embedding length, quantization."""
    details, info = show.get("details") or {}, show.get("model_info") or {}
    rows = [("architecture", info.get("general.architecture") or details.get("family", "")),
            ("parameters", details.get("parameter_size", "")),
            ("context length", _info(info, "context_length")),
            ("embedding length", _info(info, "embedding_length")),
            ("quantization", details.get("quantization_level", ""))]
    return [(k, str(v)) for k, v in rows if v not in (None, "")]


def run(args: argparse.Namespace, client: ServerClient) -> int:
    if sum(bool(getattr(args, part)) for part in _PARTS) > 1:  # Ollama's ShowHandler refuses two
        print("Error: only one of '--license', '--modelfile', '--parameters', '--system', or '--template' can be "
              "specified", file=sys.stderr)
        return 1
    show = client.post("/api/show", {"model": args.model, "verbose": args.verbose})
    if args.json:
        print(json.dumps(show, indent=2))
        return 0
    for part in _PARTS:
        if getattr(args, part):
            print(show.get(part) or "")
            return 0
    print(describe(show, verbose=args.verbose), end="")
    return 0


def describe(show: dict[str, Any], *, verbose: bool = False) -> str:
    """`ollama show`'s text (cmd.go showInfo): "  Model", "  Capabilities", "  Parameters", with `verbose`
    "  Metadata" and "  Tensors", then "  System" and "  License", rows indented by four and columns four apart."""
    # a line's words each a cell (Go's strings.Fields), so a value with spaces spans several columns, as Ollama's
    params = [tuple(line.split()) for line in (show.get("parameters") or "").split("\n") if line]
    parts = [_section("Model", model_section(show)),
             _section("Capabilities", [(c,) for c in show.get("capabilities") or []]),
             _section("Parameters", params)]
    if verbose:
        info = sorted((show.get("model_info") or {}).items())
        parts.append(_section("Metadata", [(k, metadata_value(v)) for k, v in info]))
        parts.append(_section("Tensors", [(str(t.get("name", "")), str(t.get("type", "")),
                                           "[" + " ".join(str(n) for n in t.get("shape") or []) + "]")
                                          for t in show.get("tensors") or []]))
    for title in ("system", "license"):
        if show.get(title):
            parts.append(_section(title.capitalize(), _head(show[title], 2), column_width=_TEXT_WIDTH))
    return "".join(parts)


def _head(text: str, n: int) -> list[tuple[str, ...]]:
    """showInfo's head(): the first `n` lines that are not blank, trimmed, and "..." when more follow."""
    lines = [stripped for line in text.split("\n") if (stripped := line.strip())]
    return [(line,) for line in lines[:n]] + ([("...",)] if len(lines) > n else [])


def metadata_value(value: Any) -> str:
    """A model_info value as Ollama's showInfo prints it (Go, the JSON decoded into `any`): a number as %g, a bool
    as true/false, a string as it is, a list as %v with the items that fit in 10 columns and "...+N more]" (a
    vocabulary is "[<unk> <s> ...+31998 more]"), null as <nil>."""
    if isinstance(value, list):
        from rich.cells import cell_len  # go-runewidth's StringWidth

        shown, width = 0, 1  # the opening bracket
        for i, item in enumerate(value):
            cells = cell_len(_go(item)) + (2 if i else 0)
            if width + cells > _ARRAY_WIDTH and i:
                break
            width, shown = width + cells, shown + 1
        items = " ".join(_go(v) for v in value[:shown])
        return f"[{items} ...+{len(value) - shown} more]" if shown < len(value) else f"[{items}]"
    if value is None:
        return "<nil>"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return _go(value)


def _go(value: Any) -> str:
    """%v of one decoded JSON value (every number a float64)."""
    if isinstance(value, list):
        return "[" + " ".join(_go(v) for v in value) + "]"
    if value is None:
        return "<nil>"
    return go_value(value)


def _section(title: str, rows: list[tuple[str, ...]], column_width: int = COLUMN_WIDTH) -> str:
    """One of showInfo's tables: its title, then its rows after an empty first column (so four spaces in, and a
    wrapped cell's further lines six: tablewriter fills the empty cell with two spaces there)."""
    if not rows:
        return ""
    return "\n".join([f"  {title}", *text_table([("", *row) for row in rows], column_width)]) + "\n\n"
