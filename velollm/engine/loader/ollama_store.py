"""Ollama's on-disk model store: names parsed as Ollama parses them, manifests, sha256 blobs.

The store root comes from the caller (`models_dir=`) or, at the edge, from `$OLLAMA_MODELS` read at
each call, else `~/.ollama/models`, else the Linux service's `/usr/share/ollama/.ollama/models`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from velollm.errors import ModelLoadError, UnsupportedModel

logger = logging.getLogger(__name__)

DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG = "registry.ollama.ai", "library", "latest"
MODEL_MEDIA = "application/vnd.ollama.image.model"
_MEDIA = "application/vnd.ollama.image."
NAME_MAX = 255  # the longest file name Linux and macOS file systems take; Ollama allows hosts of 350 characters
_PART = {  # types/model/name.go: first char alnum or _, then alnum _ - plus . (not namespace) and : (host)
    "host": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}"),
    "namespace": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}"),
    "model": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),
    "tag": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),
}


@dataclass(frozen=True)
class OllamaName:
    host: str
    namespace: str
    model: str
    tag: str

    def display(self) -> str:
        """Ollama's DisplayShortest: `model:tag`, `ns/model:tag` or `host/ns/model:tag`."""
        if self.host.lower() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    def full(self) -> str:
        """Ollama's String(): `host/namespace/model:tag`, the name its capability errors spell."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    def parts(self) -> tuple[str, str, str, str]:
        return self.host, self.namespace, self.model, self.tag

    def storable(self) -> bool:
        """Whether each part fits in a file name (a valid host may be longer: no store can hold it)."""
        return all(len(part) <= NAME_MAX for part in self.parts())  # parts are ASCII: characters are bytes


def parse_name(name: str) -> OllamaName | None:
    """Parse `[host/][namespace/]model[:tag]` as Ollama's ParseName does; None when invalid."""
    name = name.strip()
    if "://" in name:
        name = name.split("://", 1)[1]
    tag = DEFAULT_TAG
    colon, slash = name.rfind(":"), name.rfind("/")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    pieces = name.split("/")
    if len(pieces) > 3:
        return None
    model = pieces[-1]
    namespace = pieces[-2] if len(pieces) >= 2 else DEFAULT_NAMESPACE
    host = pieces[0] if len(pieces) == 3 else DEFAULT_HOST
    parsed = OllamaName(host, namespace, model, tag)
    for kind, value in zip(("host", "namespace", "model", "tag"), parsed.parts()):
        if not _PART[kind].fullmatch(value):
            return None
    return parsed


def models_dir(env: Mapping[str, str] | None = None) -> Path:
    """The store root: $OLLAMA_MODELS, else ~/.ollama/models, else /usr/share/ollama/.ollama/models."""
    env = os.environ if env is None else env
    configured = env.get("OLLAMA_MODELS", "").strip().strip("'\"")
    if configured:
        return Path(configured).expanduser()
    home = Path(env.get("HOME") or Path.home()) / ".ollama" / "models"
    service = Path("/usr/share/ollama/.ollama/models")
    return home if home.is_dir() or not service.is_dir() else service


@dataclass(frozen=True)
class OllamaModel:
    """One manifest of the store and the layers VeloLLM uses."""

    name: OllamaName
    manifest_path: Path
    digest: str  # sha256 hex of the manifest bytes, as /api/tags reports
    size: int  # layers + config, as /api/tags reports
    modified_at: float
    model_path: Path | None  # the GGUF blob (last model layer)
    config: dict[str, Any] = field(default_factory=dict)  # the config blob (family, file_type, ...)
    params: dict[str, Any] = field(default_factory=dict)
    layer_error: str = ""  # why a params or messages layer is unusable: show works, a chat is a 400 saying so
    system: str | None = None
    template: str | None = None
    license_paths: tuple[Path, ...] = ()  # license layers, read only when asked (`ollama show`)
    messages: tuple[dict[str, str], ...] = ()  # the messages layer (Modelfile MESSAGE lines)

    @property
    def display_name(self) -> str:
        return self.name.display()

    def licenses(self) -> tuple[str, ...]:
        """The license layers' texts, in the manifest's order."""
        return tuple(p.read_text(encoding="utf-8", errors="replace") for p in self.license_paths)

    def license(self) -> str:
        """The license layers' text, as `ollama show --license` prints them (Ollama's show joins them by newlines)."""
        return "\n".join(self.licenses())


DIGEST = re.compile(r"sha256[:-][0-9a-fA-F]{64}")  # Ollama's blob digest rule (manifest.BlobsPath)


def blob_path(root: Path, digest: str) -> Path:
    """Where the store keeps the blob `sha256:<hex>`: blobs/sha256-<hex>. Any other digest (a manifest on
    disk is only a file: `../` in one would reach outside blobs/) is a ModelLoadError."""
    if not DIGEST.fullmatch(digest):
        raise ModelLoadError(f"{json.dumps(digest)[:100]} is not an Ollama blob digest (sha256:<64 hex digits>)")
    return root / "blobs" / digest.replace(":", "-")


def manifest_paths(root: Path, strict: bool = False) -> list[Path]:
    """Every manifest file, manifests/<host>/<namespace>/<model>/<tag>. Unlike Path.glob (Python < 3.13),
    a folder that a delete at the same time removes is skipped, not a FileNotFoundError. `strict`: a folder that
    cannot be read is an OSError, not skipped (a prune must know every manifest)."""
    level = [root / "manifests"]
    for _ in range(4):
        level = [Path(entry.path) for folder in level for entry in _entries(folder, strict)]
    return [path for path in level if path.is_file()]


def _entries(folder: Path, strict: bool = False) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):  # gone, or a file where the walk looks for folders
        return []
    except OSError:  # unreadable
        if strict:
            raise
        return []


def find_manifest(root: Path, name: OllamaName) -> Path | None:
    """The manifest file of `name` (names compare case-insensitively), None when the store lacks it."""
    if not name.storable():  # the lookup would be ENAMETOOLONG
        return None
    exact = root.joinpath("manifests", *name.parts())
    if exact.is_file():
        return exact
    wanted = tuple(p.lower() for p in name.parts())
    for path in manifest_paths(root):  # names compare case-insensitively (EqualFold)
        if tuple(p.lower() for p in path.parts[-4:]) == wanted:
            return path
    return None


def read_manifest(root: Path, path: Path) -> OllamaModel:
    """Read one manifest and its small layers; a missing blob is a ModelLoadError naming it."""
    raw = path.read_bytes()
    name = OllamaName(*path.parts[-4:])
    try:
        manifest = json.loads(raw)
        layers = list(manifest.get("layers") or [])
    except (json.JSONDecodeError, AttributeError, TypeError) as e:
        raise ModelLoadError(f"Ollama manifest for {name.display()} is not valid JSON ({len(raw)} bytes, {raw[:24]!r}"
                             f"{'...' if len(raw) > 24 else ''}): {e}; at {path}") from e
    config_ref = manifest.get("config") or {}
    bad = next((ref for ref in [config_ref, *layers] if not _is_ref(ref)), None)
    if bad is not None:  # a hand edit or a broken write: said as such, not an AttributeError deep below
        raise ModelLoadError(f"Ollama manifest {path} for {name.display()} has an entry that is not a layer "
                             f"({{mediaType, digest, size}}): {json.dumps(bad)[:200]}")
    fields: dict[str, Any] = {"model_path": None, "params": {}, "layer_error": "", "system": None, "template": None,
                              "config": {}, "license_paths": (), "messages": ()}
    if config_ref.get("digest") and blob_path(root, config_ref["digest"]).is_file():
        fields["config"] = _config(blob_path(root, config_ref["digest"]), name)
    for layer in layers:
        media, digest = layer.get("mediaType", ""), layer.get("digest", "")
        kind = media.removeprefix(_MEDIA) if media.startswith(_MEDIA) else None
        if kind not in ("model", "params", "system", "template", "prompt", "license", "messages"):
            continue
        blob = blob_path(root, digest)
        if not blob.is_file():
            raise ModelLoadError(f"Ollama model {name.display()}: manifest {path} names blob {blob}, which is missing")
        if kind == "model":
            fields["model_path"] = blob
        elif kind == "params":
            fields["params"], why = _params(blob, name)
            fields["layer_error"] = fields["layer_error"] or why
        elif kind == "license":
            fields["license_paths"] += (blob,)
        elif kind == "messages":
            fields["messages"], why = _messages(blob, name)
            fields["layer_error"] = fields["layer_error"] or why
        elif kind == "system":  # Go keeps bytes that are not UTF-8 (its JSON writes them as U+FFFD): no 500 here
            fields["system"] = blob.read_text(encoding="utf-8", errors="replace")
        else:
            fields["template"] = blob.read_text(encoding="utf-8", errors="replace")
    size = sum(int(layer.get("size", 0)) for layer in layers) + int(config_ref.get("size", 0))
    return OllamaModel(name=name, manifest_path=path, digest=hashlib.sha256(raw).hexdigest(), size=size,
                       modified_at=path.stat().st_mtime, **fields)


def _is_ref(ref: Any) -> bool:
    """A manifest's config or layer entry: an object whose mediaType and digest (if any) are strings and
    whose size (if any) is a whole number, with a digest (if any) of Ollama's form."""
    return (isinstance(ref, dict) and all(isinstance(ref.get(k, ""), str) for k in ("mediaType", "digest"))
            and (not ref.get("digest") or DIGEST.fullmatch(ref["digest"]) is not None)
            and isinstance(ref.get("size", 0), int) and not isinstance(ref.get("size", 0), bool))


def _messages(path: Path, name: OllamaName) -> tuple[tuple[dict[str, str], ...], str]:
    """The messages layer: a JSON list of {role, content} (Ollama's create writes it); entries of another
    shape are skipped, as Ollama's JSON decoding would leave them empty. A layer that is not valid JSON reads as
    none, with the reason (a chat on the model reports it; show and the listings still work)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, json.JSONDecodeError) as e:
        why = f"its messages layer {path.name} is not valid JSON: {e}"
        logger.warning("Ollama model %s: %s", name.display(), why)
        return (), why
    return tuple({"role": m["role"], "content": m.get("content") if isinstance(m.get("content"), str) else ""}
                 for m in (value if isinstance(value, list) else [])
                 if isinstance(m, dict) and isinstance(m.get("role"), str)), ""


def _params(path: Path, name: OllamaName) -> tuple[dict[str, Any], str]:
    """The params layer and why it is unusable ("" when it is a JSON object). Written by another tool it may be
    anything; the model stays listed and shown (without parameters), and a chat on it says why it cannot run."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        why = f"its params layer {path.name} is not valid JSON: {e}"
    else:
        if isinstance(value, dict):
            return value, ""
        why = f"its params layer {path.name} is not a JSON object but {type(value).__name__}"
    logger.warning("Ollama model %s: %s", name.display(), why)
    return {}, why


def _config(path: Path, name: OllamaName) -> dict[str, Any]:
    """The config blob (family, file type, ...: what listings show); one that is not a JSON object, as another tool
    may write it, reads as empty with a warning, so the model stays listed and shown rather than dropped."""
    try:
        value = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, json.JSONDecodeError) as e:
        logger.warning("Ollama model %s: its config blob %s is not valid JSON: %s", name.display(), path.name, e)
        return {}
    return value if isinstance(value, dict) else {}


def find_model(name: str, root: Path | None = None) -> OllamaModel | None:
    """The store's model called `name`, None when the name is invalid or not in the store."""
    parsed = parse_name(name)
    root = models_dir() if root is None else root
    if parsed is None or not root.is_dir():
        return None
    path = find_manifest(root, parsed)
    try:
        return read_manifest(root, path) if path is not None else None
    except (FileNotFoundError, ModelLoadError):  # a delete at the same time removed a file it names (the
        # manifest, then its blobs): look again, now gone; a model broken for good fails the same way again
        path = find_manifest(root, parsed)
        return read_manifest(root, path) if path is not None else None


def check_runnable(model: OllamaModel) -> OllamaModel:
    """`model`, if it is a local GGUF VeloLLM can load; a cloud model or one without a GGUF model
    layer (safetensors layers) is UnsupportedModel, so the proxy can forward it."""
    if model.config.get("remote_host") or model.config.get("remote_model"):
        raise UnsupportedModel(f"Ollama model {model.display_name} is a cloud model")
    if model.model_path is None:
        raise UnsupportedModel(f"Ollama model {model.display_name} has no GGUF model layer in {model.manifest_path}")
    return model


def list_models(root: Path | None = None) -> list[OllamaModel]:
    """Every readable manifest of the store, newest first (as /api/tags orders them)."""
    root = models_dir() if root is None else root
    found = []
    for path in manifest_paths(root):
        try:
            found.append(read_manifest(root, path))
        except (ModelLoadError, OSError) as e:
            logger.warning("skipping %s: %s", path, e)
    return sorted(found, key=lambda m: m.modified_at, reverse=True)
