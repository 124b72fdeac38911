"""The Ollama install beside VeloLLM: its model store and whether its server answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OllamaInfo:
    store: Path
    num_models: int
    host: str
    server_version: str | None  # None when no Ollama answers at host (or it was not asked)
    probed: bool = True


def detect_ollama(env: Mapping[str, str], *, probe: bool = True, timeout: float = 0.5) -> OllamaInfo:
    """The store at $OLLAMA_MODELS (or Ollama's default) and, with `probe`, the server at $OLLAMA_HOST."""
    import httpx

    from velollm.engine.loader.ollama_store import list_models, models_dir
    from velollm.wire.ollama_host import parse_ollama_host

    store = models_dir(env)
    num_models = len(list_models(store)) if store.exists() else 0
    host = parse_ollama_host(env.get("OLLAMA_HOST"))
    version = None
    if probe:
        try:
            version = httpx.get(f"{host}/api/version", timeout=timeout).json().get("version")
        except (httpx.HTTPError, ValueError):
            pass
    return OllamaInfo(store, num_models, host, version, probe)
