"""`velollm list`: the Ollama store's models, and whether VeloLLM runs each natively."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from velollm.errors import UnsupportedModel, VeloLLMError

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
        ))
    return rows


def _human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000  # type: ignore[assignment]
    return str(size)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("list", aliases=["ls"],
                                   help="list the Ollama store's models and whether VeloLLM runs them")
    parser.add_argument("prefix", nargs="?", default="", help="only the models whose name starts with it")
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="Ollama store root (default: $OLLAMA_MODELS, else ~/.ollama/models)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from velollm.commands.table_console import table_console
    from velollm.engine.loader.ollama_store import models_dir

    root = args.models_dir or models_dir()
    console = table_console()
    rows = [row for row in collect(root) if row.name.startswith(args.prefix)]  # `ollama ls llama`
    if not rows:
        console.print(f"no models in the Ollama store at {root}")
        return 0
    table = Table(title=f"Ollama models in {root}")
    for column in ("NAME", "SIZE", "QUANTIZATION", "FAMILY", "CAPABILITY", "NATIVE"):
        table.add_column(column, justify="right" if column == "SIZE" else "left")
    for row in rows:
        native = "yes" if row.native else f"no ({row.reason})"
        table.add_row(row.name, _human(row.size), row.quantization, row.family, row.capability, native)
    console.print(table)
    return 0
