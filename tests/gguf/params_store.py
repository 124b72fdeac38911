"""A served temporary Ollama store of one tiny GGUF under several names, each with its own params layer as
stored (and, by name, more layers): what tests of a model's own options read through a live server."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from tests.proxy.gguf_fixture import write_tiny_llama_gguf
from tests.serve_process import start_serve

MEDIA = "application/vnd.ollama.image."


def _blob(root: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs" / f"sha256-{digest}").write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def serve_params_store(base: Path, params: dict[str, bytes],
                       more: dict[str, dict[str, bytes]] | None = None) -> tuple[subprocess.Popen, str]:
    """`velollm serve` (on demand, one model loaded at a time) on a store where each name of `params` is the tiny
    GGUF with that params layer, plus the layers `more[name]` gives (kind -> data); its process and URL."""
    root = base / "models"
    (root / "blobs").mkdir(parents=True)
    gguf = _blob(root, write_tiny_llama_gguf(base / "tiny.gguf", seed=0).read_bytes())
    config = _blob(root, b'{"model_format":"gguf","model_family":"llama","file_type":"Q8_0"}')
    for name, layer in params.items():
        layers = [{"mediaType": MEDIA + "model", **gguf},
                  {"mediaType": MEDIA + "template", **_blob(root, b"{{ .Prompt }}")},
                  {"mediaType": MEDIA + "params", **_blob(root, layer)}]
        extra = (more or {}).get(name, {})
        layers += [{"mediaType": MEDIA + kind, **_blob(root, data)} for kind, data in extra.items()]
        path = root / "manifests/registry.ollama.ai/library" / name / "latest"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"schemaVersion": 2, "config": {"mediaType": "x", **config}, "layers": layers}))
    proc, url, _, _ = start_serve(base, "--no-upstream", "--max-loaded-models", "1", "--max-model-len", "128",
                                  "--kv-cache-memory", "16MiB", env={"OLLAMA_MODELS": str(root)})
    return proc, url
