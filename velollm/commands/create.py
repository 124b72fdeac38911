"""`velollm create MODEL [-f Modelfile] [-q QUANT]`: a model built from a Modelfile, as `ollama create` builds it.

The Modelfile (velollm/commands/modelfile.py) becomes Ollama's /api/create request as Ollama's CLI makes it
(parser.CreateRequest): FROM a name is `from`; FROM a path (relative to the Modelfile's folder, or `~/...`)
to a GGUF file or a model folder is `files`, each file hashed and uploaded first (HEAD then POST
/api/blobs/sha256:...) unless the server has it; ADAPTER / DRAFT paths likewise; SYSTEM, TEMPLATE,
LICENSE (repeatable), MESSAGE, RENDERER, PARSER, REQUIRES as they are; PARAMETER values typed as Ollama's
api.FormatParams types them (`stop` collects every value), an unknown name refused before anything is sent.
Without -f, ./Modelfile; without that either, the current folder as the model (Ollama's `FROM .`).

The server writes the model into its Ollama upstream, or into its own Ollama store when it has none
(velollm/api/local_create.py: FROM a model of the store or a GGUF file). Progress goes to stderr, a line
per status, as Ollama's spinners leave them; the exit status is 1 on any error, with the server's message.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from velollm.commands.chat_parameters import format_parameter
from velollm.commands.client import ServerClient, server_command
from velollm.commands.modelfile import Command, ModelfileError, decode, parse
from velollm.commands.pull import draw_progress

CHUNK = 8 << 20
DEPRECATED = ("penalize_newline", "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mlock", "mirostat",
              "mirostat_tau", "mirostat_eta")
_SEMVER = re.compile(r"^\d+(\.\d+){0,2}(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
# a model folder's files, in Ollama's order of preference (parser.filesForModel)
_WEIGHTS = ("model*.safetensors", "consolidated*.safetensors", "pytorch_model*.bin", "consolidated*.pth", "*.gguf",
            "*.bin")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("create", help="create a model from a Modelfile")
    parser.add_argument("model", metavar="MODEL")
    parser.add_argument("-f", "--file", help="name of the Modelfile (default: Modelfile)")
    parser.add_argument("-q", "--quantize", help="quantize the model to this level (q4_K_M, q4_K_S or q8_0)")
    parser.set_defaults(run=server_command(run))


def run(args: argparse.Namespace, client: ServerClient) -> int:
    try:
        text, folder = _modelfile(args.file)
        body, uploads = request(parse(text), folder)
    except (ModelfileError, OSError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    files = {}
    if uploads:
        print("gathering model components", file=sys.stderr)
        for key, paths in uploads.items():
            files[key] = {name: _upload(client, path) for name, path in paths.items()}
    body.update(files)
    body["model"] = args.model
    if args.quantize:
        body["quantize"] = args.quantize
    draw_progress(client, "/api/create", {**body, "stream": True}, bar_label=lambda status, digest: status)
    return 0


def _modelfile(name: str | None) -> tuple[str, Path]:
    """The Modelfile's text and the folder its paths are relative to."""
    path = Path(name or "Modelfile").absolute()
    try:
        return decode(path.read_bytes()), path.parent
    except FileNotFoundError:
        if name:
            raise ModelfileError("specified Modelfile wasn't found") from None
        return "FROM .\n", path.parent


def request(commands: list[Command], folder: Path) -> tuple[dict[str, Any], dict[str, dict[str, Path]]]:
    """The /api/create body the commands describe, and the local files to upload for it:
    {"files" | "adapters" | "draft_files": {name sent: path}}."""
    body: dict[str, Any] = {}
    uploads: dict[str, dict[str, Path]] = {}
    parameters: dict[str, Any] = {}
    licenses: list[str] = []
    messages: list[dict[str, str]] = []
    for command in commands:
        name, value = command.name, command.args
        if name in ("model", "draft", "adapter"):
            path = _expand(value, folder)
            if not path.exists():
                if name == "model":
                    body["from"] = value
                    continue
                raise ModelfileError(f"{name.upper()} {value}: no such file or directory: {path}")
            key = {"model": "files", "draft": "draft_files", "adapter": "adapters"}[name]
            found = _model_files(path)
            uploads[key] = found if name == "adapter" else {**uploads.get(key, {}), **found}
        elif name in ("template", "system", "renderer", "parser"):
            body[name] = value
        elif name == "license":
            licenses.append(value)
        elif name == "requires":
            if not _SEMVER.match(value.removeprefix("v")):
                raise ModelfileError("requires must be a valid semver (e.g. 0.14.0)")
            body["requires"] = value.removeprefix("v")
        elif name == "message":
            role, _, content = value.partition(": ")
            messages.append({"role": role, "content": content})
        elif name in DEPRECATED:
            print(f"warning: parameter {name} is deprecated", file=sys.stderr)
        else:
            try:
                typed = format_parameter(name, [value])
            except ValueError as exc:
                raise ModelfileError(str(exc)) from None
            parameters[name] = parameters.get(name, []) + typed if name == "stop" else typed
    if parameters:
        body["parameters"] = parameters
    if messages:
        body["messages"] = messages
    if licenses:
        body["license"] = licenses
    return body, uploads


def _expand(value: str, folder: Path) -> Path:
    """A FROM/ADAPTER path as Ollama resolves it: absolute, `~`/`~user`, or relative to the Modelfile."""
    if value.startswith("~"):
        return Path(os.path.expanduser(value)).absolute()
    path = Path(value)
    return path.absolute() if path.is_absolute() else (folder / path).absolute()


def _model_files(path: Path) -> dict[str, Path]:
    """{name sent: path}: a file alone under its own name, or a model folder's weights (the first kind of
    _WEIGHTS found), its JSON files (nested ones too: a sentence-transformers folder) and tokenizer.model,
    named relative to the folder."""
    if not path.is_dir():
        return {path.name: path}
    weights: list[Path] = []
    for pattern in _WEIGHTS:
        weights = sorted(path.glob(pattern))
        if pattern == "model*.safetensors" and weights:
            weights += sorted(path.glob(f"*/{pattern}"))
        if weights:
            break
    if not weights:
        raise ModelfileError("no Modelfile or safetensors files found")
    extra = sorted(path.glob("*.json")) + sorted(path.glob("*/*.json")) + sorted(path.glob("chat_template.jinja"))
    tokenizer = sorted(path.glob("tokenizer.model")) or sorted(path.glob("*/tokenizer.model"))
    files = {}
    for file in weights + extra + tokenizer:
        real = file.resolve()
        if not real.is_relative_to(path.resolve()):
            raise ModelfileError(f"insecure path: {file.relative_to(path)}")
        files[file.relative_to(path).as_posix()] = real
    return files


def _upload(client: ServerClient, path: Path) -> str:
    """The file's digest, after sending it to the server unless the server already has it."""
    from velollm.engine.loader.ollama_store_edit import file_digest  # (the CLI's start-up stays light)

    digest = file_digest(path)
    if client.head(f"/api/blobs/{digest}") == 200:
        return digest
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    size = path.stat().st_size
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(f"copying file {digest[:19]}", total=size)

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as f:
                while block := f.read(CHUNK):
                    progress.advance(task, len(block))
                    yield block

        client.upload(f"/api/blobs/{digest}", chunks(), size)
    return digest
