"""POST /api/create without an Ollama upstream: a model written into the local Ollama store, as Ollama's
create writes it (server/create.go), from what VeloLLM can stand behind:

- `from`: a model of the store (its layers and config reused: nothing is copied), and/or
- `files`: one uploaded GGUF blob (POST /api/blobs first) as the model layer, its config (family,
  parameter size, quantization) read from the GGUF header;
- then `template`, `system`, `license` (a string or a list), `messages` and `parameters` (merged over the
  base model's, as Ollama merges them) as new layers, each replacing the base's layer of that kind.

`quantize` (q4_K_M, q4_K_S, q8_0: Ollama's levels) writes the model layer again quantized (create_quantize.py),
its progress streamed while it runs; `adapters`, draft models and safetensors files need Ollama's converter:
400 saying so.
Everything is checked before anything is written (400 / 404 with Ollama's `{"error"}`); then the blobs
and the manifest are written whole (temporary files renamed) and the answer is Ollama's progress:
`using existing layer` / `creating new layer` per layer, `writing manifest`, `success` (one NDJSON line
each, or the last alone with `stream: false`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from velollm.api.create_quantize import quantize_model_layer
from velollm.api.handler import AppState
from velollm.api.live_progress import Emit, live_progress
from velollm.api.model_admin import store_op
from velollm.engine.loader import ollama_store_edit as store_edit
from velollm.engine.loader.ollama_store import (
    MODEL_MEDIA,
    OllamaName,
    blob_path,
    find_manifest,
    parse_name,
)
from velollm.errors import InvalidRequest, ModelNotFound
from velollm.wire.pull_answer import wants_stream

logger = logging.getLogger(__name__)

MEDIA = "application/vnd.ollama.image."
UNSUPPORTED = ("adapters", "draft_files", "draft_quantize", "remote_host")
TEXT_LAYERS = ("template", "system")
PATH_STARTS = ("/", "./", "../", "~", ".\\", "..\\")  # how a Modelfile's FROM path begins (a name never does)


async def create_locally(state: AppState, request: Request, body: dict[str, Any], root: Path) -> Response:
    """The create, its progress sent as it goes when streamed (a quantization takes minutes); a client that leaves,
    streamed or not, stops the work (live_progress): no temporary blob, no manifest."""
    threads = state.config.quantize_threads
    return await live_progress(lambda emit: store_op(state, create_model, body, root, emit, threads),
                               state.models.store_changed, request.receive, wants_stream(body))


def create_model(body: dict[str, Any], root: Path, emit: Emit | None = None,
                 threads: int | None = None) -> list[dict[str, Any]]:
    """Writes the model `body` describes into the store; the progress lines (blocking: a worker thread). With
    `emit`, the lines up to the quantization's end go to `emit` as they happen and the rest are returned.
    `threads`: the quantization's (None: chunk_pool.default_workers())."""
    name = body.get("model") or body.get("name") or ""
    parsed = parse_name(name) if isinstance(name, str) else None
    if parsed is None:
        raise InvalidRequest("invalid model name", param="model")
    store_edit.check_storable(parsed, "model")
    for field in UNSUPPORTED:
        if body.get(field):
            raise InvalidRequest(f"{field} is not supported without an Ollama upstream: VeloLLM creates models "
                                 "from a model of its store or a GGUF file, with a template, system prompt, "
                                 "parameters, license and messages, and quantizes to q4_K_M, q4_K_S and q8_0",
                                 param=field)
    base = body.get("from")
    if base is not None and not isinstance(base, str):
        raise InvalidRequest(f"from must be a model name (a string), got {type(base).__name__}", param="from")
    files = body.get("files") or {}
    if not base and not files:
        raise InvalidRequest("neither 'from' or 'files' was specified", param="from")
    config, layers, lines = _base(root, base) if base else ({}, [], [])
    if files:
        config, model_layer = _gguf(root, files)
        layers = [layer for layer in layers if layer.get("mediaType") != MODEL_MEDIA] + [model_layer]
        lines.append({"status": "parsing GGUF"})
    new = _new_layers(root, body, layers)  # (checked before a quantization that may take minutes)
    written: list[Path] = []  # the blobs this create put into the store: removed again when it fails
    try:
        rest = _write(root, parsed, body, config, layers, new, lines, emit, threads, written)  # (`lines` updated)
    except BaseException:
        try:
            store_edit.remove_unnamed(root, written)
        except OSError as exc:  # the create's own failure stays the answer; a start-up prune takes them later
            logger.warning("could not remove the blobs of a failed create: %s", exc)
        raise
    return lines + rest


def _write(root: Path, parsed: OllamaName, body: dict[str, Any], config: dict[str, Any], layers: list[dict[str, Any]],
           new: list[tuple[str, bytes]], lines: list[dict[str, Any]], emit: Emit | None, threads: int | None,
           written: list[Path]) -> list[dict[str, Any]]:
    """The blobs and the manifest written; the progress lines after `lines`. Each blob it creates goes into
    `written` as it is renamed into place."""
    quantize = body.get("quantize") or body.get("quantization")
    if quantize:
        config, layers = quantize_model_layer(root, quantize, config, layers, lines, emit, threads, written)
    out: list[dict[str, Any]] = []
    replaced = {MEDIA + kind for kind, _ in new}
    if MEDIA + "template" in replaced:
        replaced.add(MEDIA + "prompt")  # the template's legacy name
    layers = [layer for layer in layers if layer.get("mediaType") not in replaced]
    for kind, data in new:
        digest = _write_blob(root, data, written)
        layers.append({"mediaType": MEDIA + kind, "digest": digest, "size": len(data)})
        out.append({"status": f"creating new layer {digest}"})
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    manifest = {"schemaVersion": 2, "mediaType": store_edit.MANIFEST_MEDIA,
                "config": {"mediaType": store_edit.CONFIG_MEDIA, "digest": _write_blob(root, config_bytes, written),
                           "size": len(config_bytes)},
                "layers": layers}
    out.append({"status": "writing manifest"})
    path = find_manifest(root, parsed) if root.is_dir() else None
    store_edit.write_file(path or root.joinpath("manifests", *parsed.parts()),
                          json.dumps(manifest, separators=(",", ":")).encode() + b"\n")
    return out + [{"status": "success"}]


def _base(root: Path, base: Any) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The config, layers and progress lines of the store model `base`."""
    parsed = parse_name(base) if isinstance(base, str) else None
    if parsed is None and isinstance(base, str) and base.startswith(PATH_STARTS):
        # the client's `FROM <path>` to a file it did not find (Ollama's CLI then sends the path as a name): name it
        raise InvalidRequest(f"FROM {base}: no such file or directory (and not a model name): a GGUF file or model "
                             "folder is read and uploaded by the client, from the path as the Modelfile gives it",
                             param="from")
    path = find_manifest(root, parsed) if parsed is not None and root.is_dir() else None
    if path is None:
        raise ModelNotFound(f"model '{base}' not found: VeloLLM creates from models of its Ollama store "
                            f"({root}) only, without an Ollama upstream")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:  # deleted since it was found
        raise ModelNotFound(f"model '{base}' not found") from None
    manifest = _loads(raw)
    layers, config_ref = manifest.get("layers"), manifest.get("config")
    if not isinstance(layers, list) or not isinstance(config_ref, dict):
        raise _broken(base, path, "not a manifest (an object with config and layers)")
    for ref in [config_ref, *layers]:
        digest = ref.get("digest") if isinstance(ref, dict) else None
        if not isinstance(digest, str) or not store_edit.DIGEST.fullmatch(digest):
            raise _broken(base, path, f"a layer without a valid digest: {json.dumps(ref)[:200]}")
        if not blob_path(root, digest).is_file():
            raise _broken(base, path, f"blob {digest} is missing")
    config = _read_json(blob_path(root, config_ref["digest"]))
    layers = [dict(layer) for layer in layers]
    return config, layers, [{"status": f"using existing layer {layer['digest']}"} for layer in layers]


def _broken(base: str, path: Path, why: str) -> InvalidRequest:
    """The base model is in the store but unusable (a partial pull, a hand edit): the client's to fix."""
    return InvalidRequest(f"cannot create from model '{base}': its manifest {path} is broken ({why}); delete it "
                          "and pull or create it again", param="from")


def _gguf(root: Path, files: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config and model layer of the one GGUF blob of `files` ({filename: digest})."""
    if not isinstance(files, dict) or not all(isinstance(d, str) for d in files.values()):
        raise InvalidRequest("files must map file names to blob digests", param="files")
    if len(files) != 1:
        raise InvalidRequest("without an Ollama upstream, files must name one GGUF file (safetensors models "
                             "need Ollama's converter)", param="files")
    (filename, digest), = files.items()
    store_edit.check_digest(digest)
    path = blob_path(root, digest)
    if not path.is_file():
        raise InvalidRequest(f"blob {digest} of {filename!r} not found: upload it first "
                             f"(POST /api/blobs/{digest})", param="files")
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise InvalidRequest(f"{filename!r} is not a GGUF file: without an Ollama upstream, VeloLLM creates "
                                 "models from GGUF files only", param="files")
    from velollm.api.ollama_models import human_number
    from velollm.engine.loader.gguf import model_info
    from velollm.engine.loader.gguf_file import GGUFFile

    try:
        with GGUFFile(path) as f:
            info = model_info(f, filename)
    except Exception as exc:  # a broken upload: the client's to fix (named by its file name, not the store's path)
        problem = str(exc).replace(f"{path}: ", "").replace(str(path), filename)
        raise InvalidRequest(f"{filename!r} is not a usable GGUF file: {problem}", param="files") from exc
    config = {"model_format": "gguf", "model_family": info.family, "model_families": [info.family],
              "model_type": human_number(info.parameter_count), "file_type": info.quantization_level,
              "architecture": "amd64", "os": "linux"}
    return config, {"mediaType": MODEL_MEDIA, "digest": digest, "size": path.stat().st_size}


def _new_layers(root: Path, body: dict[str, Any], base_layers: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    """(kind, bytes) of each layer the request sets, in Ollama's order."""
    out: list[tuple[str, bytes]] = []
    for kind in TEXT_LAYERS:
        value = body.get(kind)
        if value is not None:
            if not isinstance(value, str):
                raise InvalidRequest(f"{kind} must be a string", param=kind)
            out.append((kind, value.encode()))
    licenses = body.get("license")
    if licenses is not None:
        licenses = [licenses] if isinstance(licenses, str) else licenses
        if not isinstance(licenses, list) or not all(isinstance(t, str) for t in licenses):
            raise InvalidRequest("license must be a string or a list of strings", param="license")
        out += [("license", text.encode()) for text in licenses]
    parameters = body.get("parameters")
    if parameters is not None:
        out.append(("params", _params(root, parameters, base_layers)))
    messages = body.get("messages")
    if messages is not None:
        if not isinstance(messages, list) or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                                     for m in messages):
            raise InvalidRequest("messages must be a list of {role, content} objects", param="messages")
        out.append(("messages", json.dumps([{"role": m["role"], "content": m.get("content", "")} for m in messages],
                                           separators=(",", ":")).encode()))
    return out


def _params(root: Path, parameters: Any, base_layers: list[dict[str, Any]]) -> bytes:
    if not isinstance(parameters, dict):
        raise InvalidRequest("parameters must be an object", param="parameters")
    merged: dict[str, Any] = {}
    for layer in base_layers:  # the base's parameters, overridden key by key (Ollama's create)
        if layer.get("mediaType") == MEDIA + "params":
            merged.update(_read_json(blob_path(root, str(layer.get("digest", "")))))
    for key, value in parameters.items():
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, (str, int, float, bool)) for v in values):
            raise InvalidRequest(f"parameters.{key} must be a number, string or boolean (or a list of them)",
                                 param=f"parameters.{key}")
        if any(isinstance(v, int) and not -sys.float_info.max <= v <= sys.float_info.max for v in values):
            # Ollama's decoder refuses the body; stored, it made every /api/show of the model a 500 (go_value)
            raise InvalidRequest(f"parameters.{key} must be a finite number, got an integer beyond the float range",
                                 param=f"parameters.{key}")
        merged[key] = list(values) if key == "stop" else value  # `stop` is always a list
    return json.dumps(merged, separators=(",", ":")).encode()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return _loads(path.read_bytes())
    except OSError:
        return {}


def _loads(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _write_blob(root: Path, data: bytes, written: list[Path]) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = blob_path(root, digest)
    if not path.is_file():
        store_edit.write_file(path, data)
        written.append(path)
    return digest
