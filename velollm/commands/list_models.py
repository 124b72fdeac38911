"""`velollm list`: the Ollama store's models, and whether VeloLLM runs each natively."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from velollm.commands.text_table import text_table
from velollm.errors import UnsupportedModel, VeloLLMError
from velollm.wire.timestamps import iso_text

if TYPE_CHECKING:
    from velollm.engine.loader.gguf_file import GGUFFile


@dataclass(frozen=True)
class ListedModel:
    name: str
    size: int
    quantization: str
    family: str
    native: bool
    reason: str  # why not native ("" when native)
    capability: str = "completion"  # "completion" | "embedding"
    digest: str = ""  # the manifest's sha256 (Ollama's ID column: its first 12 digits)
    modified_at: float = 0.0  # seconds since the epoch


def native_check(gguf_path: Path) -> tuple[bool, str, str, str]:
    """(native, reason, family, quantization) from the GGUF header alone (no tensor is read)."""
    from velollm.engine.loader.gguf import check_supported, quantization_level
    from velollm.engine.loader.gguf_file import GGUFFile
    from velollm.engine.loader.gguf_tokenizer import check_tokenizer_supported

    try:
        with GGUFFile(gguf_path) as f:
            family, quant = str(f.get("general.architecture", "")), quantization_level(f)
            try:
                if _embedding_check(f):
                    return True, "", family, quant
                check_supported(f)
                check_tokenizer_supported(f.metadata, str(gguf_path))
            except VeloLLMError as e:
                return False, str(e).removeprefix(f"{gguf_path}: "), family, quant
            return True, "", family, quant
    except VeloLLMError as e:
        return False, str(e), "", ""


def _embedding_check(f: GGUFFile) -> bool:
    """True for an embedding model VeloLLM runs; raises UnsupportedModel for one it cannot run."""
    from velollm.embed.gguf_source import ENCODER_ARCHITECTURES, read_encoder_config
    from velollm.embed.gguf_vocab import TOKENIZER_MODELS

    if f.get("general.architecture") not in ENCODER_ARCHITECTURES:
        return False
    read_encoder_config(f)
    kind = f.get("tokenizer.ggml.model")
    if kind not in TOKENIZER_MODELS:
        raise UnsupportedModel(f"tokenizer model {kind!r} is not supported for embeddings")
    return True


def capability(gguf_path: Path) -> str:
    """"embedding" for encoders and decoders with a pooling type, else "completion"."""
    from velollm.embed.gguf_source import is_gguf_embedding

    try:
        return "embedding" if is_gguf_embedding(gguf_path) else "completion"
    except VeloLLMError:
        return "completion"


def collect(models_dir: Path | None = None) -> list[ListedModel]:
    from velollm.engine.loader.ollama_store import list_models

    rows = []
    for model in list_models(models_dir):
        native, reason, family, quant = (False, "no model layer", "", "")
        kind = "completion"
        if model.model_path is not None:
            native, reason, family, quant = native_check(model.model_path)
            kind = capability(model.model_path)
        if model.config.get("remote_host"):
            native, reason = False, "cloud model"
        rows.append(ListedModel(
            name=model.display_name,
            size=model.size,
            quantization=str(model.config.get("file_type") or quant or "?"),
            family=str(model.config.get("model_family") or family or "?"),
            native=native,
            reason=reason,
            capability=kind,
            digest=model.digest,
            modified_at=model.modified_at,
        ))
    return rows


def modified(when: float, now: float | None = None) -> str:
    """Ollama's MODIFIED column (format.HumanTime): "4 minutes ago", "About an hour ago", "2 weeks ago"."""
    from velollm.commands.ps import human_duration

    if not when:
        return "Never"
    return f"{human_duration(max(0.0, (now or time.time()) - when))} ago"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("list", aliases=["ls"],
                                   help="list the models of the server at $VELOLLM_HOST (with no server and no "
                                        "$VELOLLM_HOST: the Ollama store's, and whether VeloLLM runs them)")
    parser.add_argument("prefix", nargs="?", default="", help="only the models whose name starts with it")
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="list this Ollama store, not a server's models (default store: $OLLAMA_MODELS, "
                             "else ~/.ollama/models)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Ollama's `list` asks the server (/api/tags), so `VELOLLM_HOST=gpu-box velollm list` lists gpu-box's models.
    The local store is read only when told to (--models-dir), or when no server answers at the default address
    and $VELOLLM_HOST names none; a $VELOLLM_HOST that does not answer is an error, as Ollama's is."""
    import os

    from velollm.commands.client import ServerClient, ServerError, quiet_http_log, server_url

    if args.models_dir is not None:
        return _store_run(args)
    quiet_http_log()
    env = os.environ
    url = server_url(env)
    with ServerClient(url, api_key=env.get("VELOLLM_API_KEY")) as client:
        if client.answers():
            try:
                models = client.get("/api/tags").get("models") or []
            except ServerError as exc:
                print(f"Error: {exc}", file=sys.stderr)
                return 1
            print("\n".join(text_table(server_table(models, args.prefix))))
            return 0
    if (env.get("VELOLLM_HOST") or "").strip().strip("'\"").strip():
        print(f"Error: could not connect to a VeloLLM server at {url}, run 'velollm serve' to start it",
              file=sys.stderr)
        return 1
    return _store_run(args)


def server_table(models: list[dict[str, Any]], prefix: str = "") -> list[tuple[str, ...]]:
    """`ollama list`'s rows from /api/tags (NAME, ID: the digest's first 12 hex, SIZE, MODIFIED; a cloud model's
    size "-"), with a name prefix matched as Ollama matches it (case ignored); then the VeloLLM columns whose facts
    the answer carries (quantization and family in `details`, `capabilities`), each only when some row has it."""
    from velollm.commands.ps import human_bytes

    rows, extra = [], []
    for m in models:
        name = str(m.get("name") or m.get("model") or "")
        if not name.lower().startswith(prefix.lower()):
            continue
        size = "-" if m.get("remote_model") else human_bytes(int(m.get("size") or 0))
        rows.append((name, str(m.get("digest") or "")[:12], size, modified(_seconds(m.get("modified_at")))))
        details = m.get("details") or {}
        extra.append((str(details.get("quantization_level") or ""), str(details.get("family") or ""),
                      ",".join(m.get("capabilities") or [])))
    titles = ("QUANTIZATION", "FAMILY", "CAPABILITIES")
    carried = [i for i in range(len(titles)) if any(e[i] for e in extra)]
    head = ("NAME", "ID", "SIZE", "MODIFIED", *(titles[i] for i in carried))
    return [head] + [(*row, *(e[i] for i in carried)) for row, e in zip(rows, extra)]


def _seconds(modified_at: Any) -> float:
    """An RFC 3339 `modified_at` as unix seconds; 0 (MODIFIED "Never") for Go's zero time or none."""
    import datetime as dt

    try:
        when = dt.datetime.fromisoformat(iso_text(str(modified_at)))
    except ValueError:
        return 0.0
    return 0.0 if when.year <= 1 else when.timestamp()


def _store_run(args: argparse.Namespace) -> int:
    """The Ollama store's table (`ollama list`'s columns, plain, nothing cut), then whether VeloLLM runs each."""
    from velollm.commands.ps import human_bytes
    from velollm.engine.loader.ollama_store import models_dir

    root = args.models_dir or models_dir()
    rows = [row for row in collect(root) if row.name.lower().startswith(args.prefix.lower())]  # `ollama ls llama`
    if not rows:
        print(f"no models in the Ollama store at {root}")
        return 0
    table = [("NAME", "ID", "SIZE", "MODIFIED", "QUANTIZATION", "FAMILY", "CAPABILITY", "NATIVE")]
    table += [(row.name, row.digest[:12], human_bytes(row.size), modified(row.modified_at), row.quantization,
               row.family, row.capability, "yes" if row.native else f"no ({row.reason})") for row in rows]
    print("\n".join(text_table(table)))
    return 0
