"""What /api/show reads from the model file (Ollama's GetModelInfo): the file's own metadata and its tensor table,
from the file's header alone (no tensor data is touched).

A GGUF file gives every key but `general.name` and `tokenizer.chat_template` (the template is a field of its own),
`general.parameter_count` counted from its tensors, and each tensor as {name, type, shape} with the GGML type name
and the shape as GGUF stores it (ne0 first), with or without `verbose`. Without `verbose` its arrays are not read:
each one with items is null, an empty one [] (getModelData's maxArraySize 0, so a vocabulary never goes over the
wire). A safetensors folder gives its tensors as the files hold them, and only with `verbose`, as Ollama's
safetensors models do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_HIDDEN = ("general.name", "tokenizer.chat_template")


def file_facts(path: Path, verbose: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metadata, tensors) of the GGUF file or safetensors folder at `path`; ({}, []) for anything else."""
    if path.is_file():
        return _gguf(path, verbose)
    if path.is_dir() and verbose:
        return {}, _safetensors(path)
    return {}, []


def _gguf(path: Path, verbose: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from velollm.engine.loader.gguf_file import GGUFFile

    with GGUFFile(path, max_array_size=-1 if verbose else 0) as f:
        metadata = {key: _plain(value) for key, value in f.metadata.items() if key not in _HIDDEN}
        metadata["general.parameter_count"] = sum(t.num_elements for t in f.tensors.values())
        tensors = [{"name": t.name, "type": t.type_name, "shape": list(reversed(t.shape))} for t in f.tensors.values()]
    return metadata, tensors


def _safetensors(folder: Path) -> list[dict[str, Any]]:
    from safetensors import safe_open

    from velollm.engine.loader.safetensors import safetensors_files

    tensors = []
    for file in safetensors_files(folder):
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open gives no iterator, only keys())
                part = handle.get_slice(name)
                tensors.append({"name": name, "type": part.get_dtype(), "shape": list(part.get_shape())})
    return tensors


def _plain(value: Any) -> Any:
    """A metadata value as JSON holds it: numpy arrays and scalars as lists and numbers."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
