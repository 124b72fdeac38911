"""`velollm show MODEL`: a model's facts from the server at $VELOLLM_HOST (Ollama's `ollama show`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from velollm.commands.client import ServerClient, server_command
from velollm.commands.text_table import PADDING, text_table

_PARTS = ("license", "modelfile", "parameters", "system", "template")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("show", help="show a model's architecture, parameters, template and license")
    parser.add_argument("model")
    for part in _PARTS:
        parser.add_argument(f"--{part}", action="store_true", help=f"print only the {part}")
    parser.add_argument("--verbose", "-v", action="store_true", help="every model_info key")
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
    """`ollama show`'s text (cmd.go showInfo): "  Model", "  Capabilities", "  Parameters", "  System",
    "  License" (and with `verbose` "  Metadata"), rows indented by four and columns four apart."""
    params = [tuple(line.split(None, 1)) for line in (show.get("parameters") or "").splitlines() if line.strip()]
    parts = [_section("Model", model_section(show)),
             _section("Capabilities", [(c,) for c in show.get("capabilities") or []]),
             _section("Parameters", [(p[0], p[1] if len(p) > 1 else "") for p in params])]
    for title in ("system", "license"):
        if show.get(title):
            parts.append(_section(title.capitalize(), [(line,) for line in show[title].splitlines()[:2]]))
    if verbose:
        info = sorted((show.get("model_info") or {}).items())
        parts.append(_section("Metadata", [(k, json.dumps(v)) for k, v in info]))
    return "".join(parts)


def _section(title: str, rows: list[tuple[str, ...]]) -> str:
    if not rows:
        return ""
    return "\n".join([f"  {title}", *text_table(rows, indent=PADDING)]) + "\n\n"
