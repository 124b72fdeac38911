"""What runs natively, by name: embedding models (velollm.embed) first, else generation models (engine).

Both kinds go through the same registry and ModelPool (on demand, keep_alive, --max-loaded-models);
an EmbeddingEngine stands where an AsyncEngine would.
"""

from __future__ import annotations

from typing import Any

from velollm.config import EngineConfig
from velollm.engine.loader.source import cuda_free_bytes, default_device


def _embedding_source(name: str, allow_paths: bool) -> Any:
    from velollm.embed.resolve import find_embedding_model

    return find_embedding_model(name, allow_paths=allow_paths)


def resolve_native(name: str, allow_paths: bool) -> str:
    """The canonical name of a model VeloLLM runs (headers only), or ModelNotFound / UnsupportedModel."""
    source = _embedding_source(name, allow_paths)
    if source is not None:
        return source.info.name
    from velollm.engine.loader.resolve import resolve_model

    return resolve_model(name, allow_paths=allow_paths).info.name


def load_native(name: str, config: EngineConfig, *, served_name: str, allow_paths: bool) -> Any:
    """A started engine for `name`: an EmbeddingEngine or an AsyncEngine (blocking: worker thread)."""
    if _embedding_source(name, allow_paths) is not None:
        from velollm.embed.served import EmbeddingEngine
        from velollm.engine.loader.source import TORCH_DTYPES

        dtype = TORCH_DTYPES.get(config.dtype)  # "auto": float16 on GPUs, float32 on CPUs
        device = default_device() if config.device == "auto" else config.device
        return EmbeddingEngine.load(name, device=device, dtype=dtype)
    from velollm.engine.async_engine import AsyncEngine

    engine = AsyncEngine.from_model(name, config, served_name=served_name, allow_paths=allow_paths)
    engine.start()
    return engine


def describe_native(name: str, allow_paths: bool = True) -> Any:
    """What /api/show reads of a model that is not loaded: an EmbeddingView, else the ModelSource."""
    source = _embedding_source(name, allow_paths)
    if source is not None:
        return EmbeddingView(source)
    from velollm.engine.loader.resolve import resolve_model

    return resolve_model(name, allow_paths=allow_paths)


def prefetch_room(name: str, config: EngineConfig, allow_paths: bool) -> bool:
    """Whether `name` may load *ahead* of a request (velollm.context.model_prefetch): its files take at most
    half the free memory of the device it would load on, so a prediction never takes the room a request
    for another model needs. The load itself then makes the same fit check as any on-demand load."""
    described = describe_native(name, allow_paths)
    size = int(getattr(getattr(getattr(described, "source", described), "info", None), "size_bytes", 0) or 0)
    device = default_device() if config.device == "auto" else config.device
    if device.startswith("cuda"):
        free = cuda_free_bytes(device)
    else:
        import psutil

        free = psutil.virtual_memory().available
    return 2 * size <= free


class EmbeddingView:
    """An embedding model that is not loaded, with the attributes /api/show reads (no weights)."""

    is_embedding = True

    def __init__(self, source: Any) -> None:
        from types import SimpleNamespace

        self.source = source
        self.max_model_len = source.max_tokens
        self.dim = source.dim
        self.model_config = None
        self.tokenizer = SimpleNamespace(chat_template=None)


def native_identity(name: str, allow_paths: bool) -> str:
    """What the files of the model `name` are now (velollm/api/model_identity.py), found as resolve_model
    finds them but without reading weights or headers, and equal to the loaded engine's identity: the Ollama
    manifest digest, an HF folder's digest (names, sizes, mtimes), a GGUF file's path, size and mtime; ""
    when nothing matches. Blocking."""
    from velollm.engine.loader import hf_cache, ollama_store
    from velollm.engine.loader.user_path import user_path

    if name == "demo":
        from velollm.engine.loader.demo import ensure_demo
        from velollm.engine.loader.hf_folder import folder_digest

        return folder_digest(ensure_demo(None))
    if allow_paths:
        path = user_path(name)
        if path.exists():
            return _path_identity(path)
    model = ollama_store.find_model(name)
    if model is not None:
        return model.digest
    folder = hf_cache.snapshot_folder(name)
    return _path_identity(folder) if folder is not None else ""


def _path_identity(path: Any) -> str:
    """As resolve_model's _from_path picks the file: a GGUF file, an HF folder, a folder of one GGUF."""
    from velollm.api.model_identity import file_identity
    from velollm.engine.loader.hf_folder import folder_digest

    if path.is_dir() and (path / "config.json").is_file():
        return folder_digest(path)
    ggufs = sorted(path.glob("*.gguf")) if path.is_dir() else [path]
    if len(ggufs) != 1:
        return ""
    stat = ggufs[0].stat()
    return file_identity(str(ggufs[0]), stat.st_size, stat.st_mtime)
