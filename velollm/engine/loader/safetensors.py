"""Hugging Face safetensors reader: single or sharded files, memory-mapped, streamed as (name, tensor)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch

from velollm.engine.loader.source import TORCH_DTYPES
from velollm.errors import ModelLoadError


def safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted({folder / name for name in weight_map.values()})
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"no *.safetensors files in {folder}")
    for file in files:
        if not file.exists():
            raise ModelLoadError(f"{file} is listed in the index but missing")
    return files


def iter_safetensors(folder: Path, dtype: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield each tensor once, converted to `dtype`; safe_open maps the file instead of reading it."""
    from safetensors import safe_open

    target = TORCH_DTYPES[dtype]
    for file in safetensors_files(folder):
        try:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 (safe_open gives no iterator, only keys())
                    yield name, handle.get_tensor(name).to(target)
        except (OSError, ValueError, RuntimeError) as exc:
            if isinstance(exc, ModelLoadError):
                raise
            raise ModelLoadError(f"cannot read {file}: {exc}") from exc


def safetensors_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in safetensors_files(folder))
