"""resolve_model: a model specifier (demo, .gguf path, HF folder, Ollama name, HF repo id) -> ModelSource."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from velollm.engine.loader.source import ModelSource
from velollm.errors import InvalidRequest, ModelNotFound, PathNotAllowed

if TYPE_CHECKING:
    from velollm.engine.text.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

MAX_NAME_PART_BYTES = 255  # a file name's limit on Linux and macOS: a longer part names nothing anywhere
MAX_NAME_BYTES = 4096  # PATH_MAX


def resolve_model(spec: str, *, dtype: str | None = None, cache_dir: str | Path | None = None,
                  device: str | None = None, ollama_models: str | Path | None = None,
                  hf_hub: str | Path | None = None, allow_paths: bool = True,
                  quantization: str | None = None) -> ModelSource:
    """Find `spec` and return its lazy ModelSource; nothing is allocated yet.

    Order: "demo"; an existing path (a GGUF file or an HF folder); an Ollama name in the store
    (`ollama_models`, else $OLLAMA_MODELS read now); an HF repo id in the hub cache (`hf_hub`, else
    $HF_HUB_CACHE / $HF_HOME / ~/.cache). Raises ModelNotFound naming the spec when nothing matches,
    UnsupportedModel when it exists but cannot run natively, ModelLoadError when it is corrupt.
    `quantization` (auto | none | gguf) says whether GGUF weights stay quantized (gguf_quantized.py).
    `allow_paths=False` (names sent by clients of a server open to the network): filesystem paths are
    refused before the filesystem is looked at, so a client can neither load nor probe files.
    """
    from velollm.engine.loader import hf_cache, ollama_store
    from velollm.engine.loader.gguf import gguf_source
    from velollm.engine.loader.hf_folder import load_hf_folder
    from velollm.engine.loader.user_path import user_path

    check_model_name(spec)
    if spec == "demo":
        from velollm.engine.loader.demo import ensure_demo

        return load_hf_folder(ensure_demo(Path(cache_dir) if cache_dir else None), name="demo", dtype=dtype)
    if not allow_paths:
        if _looks_like_path(spec) or "\\" in spec:
            raise PathNotAllowed(f"model {spec!r} not found: this server does not load paths sent by clients "
                                "(start it with --allow-client-paths, or name the model with --model)")
    else:
        path = user_path(spec)
        if path.exists():
            return _from_path(path, spec, dtype, device, quantization)
        if _looks_like_path(spec):
            raise ModelNotFound(f"model {spec!r} not found: no such file or directory")
    root = Path(ollama_models) if ollama_models is not None else ollama_store.models_dir()
    model = ollama_store.find_model(spec, root)
    if model is not None:
        ollama_store.check_runnable(model)  # raises for a cloud model or one with no GGUF layer
        source = gguf_source(
            model.model_path,  # type: ignore[arg-type]
            name=model.display_name, dtype=dtype, device=device, quantization=quantization, digest=model.digest,
            size_bytes=model.size, modified_at=model.modified_at, default_options=dict(model.params),
            layer_error=model.layer_error,
            default_system=model.system, template=model.template, default_messages=model.messages,
            **_licenses(model.licenses()),
        )
        return source if model.template is not None else replace(
            source, load_tokenizer=_default_template(source.load_tokenizer))
    folder = hf_cache.snapshot_folder(spec, Path(hf_hub) if hf_hub is not None else None)
    if folder is not None:
        return _from_path(folder, spec, dtype, device, quantization)
    raise ModelNotFound(f"model {spec!r} not found (not a file, an Ollama model in {root} or a cached Hugging Face repo)")


# Ollama's template.DefaultTemplate: what renders a store model that has no TEMPLATE layer.
DEFAULT_TEMPLATE = "{{ .Prompt }}"


def _default_template(load: Callable[[], Tokenizer]) -> Callable[[], Tokenizer]:
    """A store model without a TEMPLATE layer renders with Ollama's default template when its GGUF has no jinja
    one (a base model created from a bare GGUF); the layer-less info stays (show, create see no layer)."""
    def load_with_default() -> Tokenizer:
        tokenizer = load()
        if tokenizer.chat_template is None and not tokenizer.go_template:
            tokenizer.go_template = DEFAULT_TEMPLATE
        return tokenizer

    return load_with_default


def _licenses(texts: tuple[str, ...]) -> dict[str, object]:
    """The license layers as ModelInfo holds them (none: the GGUF's general.license stays)."""
    return {"license": "\n".join(texts), "licenses": texts} if texts else {}


def check_model_name(spec: str) -> None:
    """A name no file system can hold is a 400 before any lookup (not an OSError from deep inside)."""
    try:
        encoded = spec.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest("model name is not valid Unicode (a lone surrogate)", param="model") from None
    if not spec or b"\x00" in encoded:
        raise InvalidRequest("model name must be a non-empty string without NUL characters", param="model")
    if len(encoded) > MAX_NAME_BYTES or any(len(part) > MAX_NAME_PART_BYTES for part in encoded.split(b"/")):
        raise InvalidRequest(f"model name is too long: at most {MAX_NAME_PART_BYTES} bytes between slashes and "
                             f"{MAX_NAME_BYTES} in all", param="model")


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or spec.lower().endswith(".gguf")


def _from_path(path: Path, name: str, dtype: str | None, device: str | None,
               quantization: str | None) -> ModelSource:
    from velollm.engine.loader.gguf import gguf_source
    from velollm.engine.loader.hf_folder import load_hf_folder

    if path.is_file():
        _check_gguf_magic(path, name)
        return gguf_source(path, name=name, dtype=dtype, device=device, quantization=quantization)
    if (path / "config.json").is_file():
        return load_hf_folder(path, name=name, dtype=dtype)
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:  # a GGUF repo snapshot or a folder holding one model file
        return gguf_source(ggufs[0], name=name, dtype=dtype, device=device, quantization=quantization)
    raise ModelNotFound(f"model {name!r} not found: {path} has no config.json and no single .gguf file")


def _check_gguf_magic(path: Path, name: str) -> None:
    """A file that is no GGUF is a 400 naming the path only: nothing of its contents is echoed."""
    from velollm.engine.loader.gguf_file import GGUF_MAGIC

    try:
        with path.open("rb") as f:
            magic = f.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise InvalidRequest(f"model {name!r}: {path} cannot be read ({exc.strerror})", param="model") from None
    if magic != GGUF_MAGIC:
        raise InvalidRequest(f"model {name!r}: {path} is not a model (a GGUF file or a model folder)",
                             param="model")
