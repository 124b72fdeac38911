"""A Hugging Face / sentence-transformers folder as an EmbeddingSource.

sentence-transformers layout: modules.json lists Transformer (its `path`, "" for the folder itself),
Pooling (1_Pooling/config.json) and optionally Normalize; sentence_bert_config.json caps the input
length. A plain HF folder pools by mean (encoders) or last token (decoders) and normalises.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from velollm.embed.config import ENCODER_TYPES, EncoderConfig
from velollm.embed.pooling import Pooling
from velollm.embed.source import EmbeddingSource
from velollm.engine.loader.hf_folder import folder_digest
from velollm.engine.loader.safetensors import iter_safetensors, safetensors_size
from velollm.engine.loader.source import ModelInfo
from velollm.errors import ModelLoadError, ModelNotFound, UnsupportedModel

_ST_PREFIX = "sentence_transformers.models."
_KNOWN_MODULES = {"Transformer", "Pooling", "Normalize"}


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} does not hold a JSON object")
    return data


def is_embedding_folder(folder: Path) -> bool:
    """A sentence-transformers folder, or an HF folder of an encoder architecture."""
    if (folder / "modules.json").is_file():
        return True
    config = folder / "config.json"
    return config.is_file() and str(read_json(config).get("model_type", "")) in ENCODER_TYPES


def folder_source(folder: Path, name: str | None = None) -> EmbeddingSource:
    folder = Path(folder)
    modules = _modules(folder)
    model_dir = folder / modules.get("Transformer", "")
    if not (model_dir / "config.json").is_file():
        raise ModelNotFound(f"{model_dir} has no config.json")
    raw = read_json(model_dir / "config.json")
    is_encoder = str(raw.get("model_type", "")) in ENCODER_TYPES
    pooling = _pooling(folder, modules, default_mode="mean" if is_encoder else "last")
    st_config = model_dir / "sentence_bert_config.json"
    st_max = read_json(st_config).get("max_seq_length") if st_config.is_file() else None
    if is_encoder:
        config = EncoderConfig.from_hf_config(raw)
        dim, limit, family = config.hidden_size, config.max_tokens, config.model_type
    else:
        from velollm.embed.decoder import decoder_config

        decoder = decoder_config(raw)
        dim, limit, family = decoder.hidden_size, decoder.max_position_embeddings, decoder.model_type
    max_tokens = min(limit, int(st_max)) if st_max else limit
    info = ModelInfo(
        name=name or folder.name, format="safetensors", family=family, parameter_count=_parameter_count(model_dir),
        quantization_level=str(raw.get("torch_dtype") or raw.get("dtype") or "float32").upper().replace("FLOAT", "F"),
        size_bytes=safetensors_size(model_dir), digest=folder_digest(model_dir),
        modified_at=(model_dir / "config.json").stat().st_mtime,
        path=str(folder),
    )
    if is_encoder:
        build = _encoder_builder(config, model_dir)
    else:
        from velollm.embed.decoder import decoder_builder

        build = decoder_builder(info, decoder, lambda: iter_safetensors(model_dir, "float32"))
    return EmbeddingSource(info, "encoder" if is_encoder else "decoder", dim, max_tokens, pooling, build,
                           lambda: folder_tokenizer(model_dir, raw, max_tokens))


def folder_tokenizer(model_dir: Path, raw: dict[str, Any], max_tokens: int):
    """The folder's tokenizer as transformers builds it, truncating to `max_tokens` as HF does."""
    from velollm.engine.text.tokenizer import Tokenizer

    backend = Tokenizer.from_folder(model_dir, model_config=raw, generation_config={}).backend
    backend.enable_truncation(max_tokens)
    return backend


def _modules(folder: Path) -> dict[str, str]:
    """modules.json -> {"Transformer": path, "Pooling": path, "Normalize": path}; {} without the file."""
    path = folder / "modules.json"
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from e
    out: dict[str, str] = {}
    for entry in entries:
        kind = str(entry.get("type", "")).removeprefix(_ST_PREFIX)
        if kind not in _KNOWN_MODULES:
            raise UnsupportedModel(f"{folder}: sentence-transformers module {entry.get('type')!r} is not supported "
                                   f"(VeloLLM runs {sorted(_KNOWN_MODULES)})")
        out[kind] = str(entry.get("path", ""))
    return out


def _pooling(folder: Path, modules: dict[str, str], default_mode: str) -> Pooling:
    if "Pooling" not in modules:
        return Pooling(default_mode, normalize=True)
    normalize = "Normalize" in modules
    try:
        return Pooling.from_sentence_transformers(read_json(folder / modules["Pooling"] / "config.json"), normalize)
    except ValueError as e:
        raise UnsupportedModel(f"{folder}: {e}") from e


def _encoder_builder(config: EncoderConfig, model_dir: Path):
    def build(device: str, dtype: torch.dtype):
        from velollm.embed.encoder import EncoderModel
        from velollm.embed.weights import map_hf

        model = EncoderModel.empty(config, device, dtype)
        try:
            model.load_weights(map_hf(iter_safetensors(model_dir, "float32")))
        except KeyError as e:
            raise ModelLoadError(f"{model_dir}: unexpected tensor {e.args[0]!r} for a {config.model_type} encoder") from e
        return model.eval()

    return build


def _parameter_count(model_dir: Path) -> int:
    from safetensors import safe_open

    from velollm.engine.loader.safetensors import safetensors_files

    total = 0
    for file in safetensors_files(model_dir):
        with safe_open(str(file), framework="pt") as handle:
            total += sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())  # noqa: SIM118 (not a dict)
    return total
