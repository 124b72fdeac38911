"""A Hugging Face model folder (config.json + safetensors + tokenizer files) as a ModelSource."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from velollm.config import ModelConfig
from velollm.engine.loader.safetensors import iter_safetensors, safetensors_files, safetensors_size
from velollm.engine.loader.source import ModelInfo, ModelSource
from velollm.errors import ModelLoadError, ModelNotFound


def load_hf_folder(folder: Path, *, name: str | None = None, dtype: str | None = None) -> ModelSource:
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelNotFound(f"{folder} has no config.json")
    try:
        raw = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{config_path} is not valid JSON: {exc}") from exc
    config = ModelConfig.from_hf_config(raw, dtype=dtype)
    generation = folder / "generation_config.json"
    generation_config: dict = {}  # passed to the tokenizer, which would otherwise read both files again
    if generation.is_file():
        generation_config = json.loads(generation.read_text())
        eos = generation_config.get("eos_token_id")
        extra = eos if isinstance(eos, list) else ([eos] if eos is not None else [])
        config = config.replace(eos_token_ids=tuple(dict.fromkeys([*config.eos_token_ids, *extra])))
    info = ModelInfo(
        name=name or folder.name,
        format="safetensors",
        family=config.model_type,
        parameter_count=_parameter_count(config),
        quantization_level=config.dtype.upper().replace("FLOAT", "F"),
        size_bytes=safetensors_size(folder),
        digest=folder_digest(folder),
        modified_at=config_path.stat().st_mtime,
        path=str(folder),
    )

    def load_tokenizer():
        from velollm.engine.text.tokenizer import Tokenizer

        return Tokenizer.from_folder(folder, model_config=raw, generation_config=generation_config)

    return ModelSource(config, info, load_tokenizer, lambda: iter_safetensors(folder, config.dtype), folder)


def _parameter_count(config: ModelConfig) -> int:
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    q = config.num_attention_heads * config.head_dim
    kv = config.num_key_value_heads * config.head_dim
    per_layer = h * (q + 2 * kv) + q * h + 3 * h * i + 2 * h
    embeddings = config.vocab_size * h * (1 if config.tie_word_embeddings else 2)
    return layers * per_layer + embeddings + h


def folder_digest(folder: Path) -> str:
    """A cheap stable digest: file names, sizes and mtimes (hashing gigabytes at startup is not worth it)."""
    h = hashlib.sha256()
    for file in safetensors_files(folder):
        stat = file.stat()
        h.update(f"{file.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return h.hexdigest()
