"""Embedding response bodies: OpenAI's list of embedding objects (float or base64), Ollama's arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from velollm.errors import InvalidRequest
from velollm.wire.embedding_base64 import float32_base64


def fit_dimensions(vectors: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """The first `dimensions` components (Matryoshka truncation), renormalised when the model normalises."""
    if dimensions is None or dimensions == vectors.shape[1]:
        return vectors
    if dimensions > vectors.shape[1]:
        raise InvalidRequest(f"dimensions must be at most the model's {vectors.shape[1]}, got {dimensions}",
                             param="dimensions")
    out = vectors[:, :dimensions]
    if normalize:
        out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(out, dtype=np.float32)


def openai_body(model: str, vectors: np.ndarray, num_tokens: int, encoding_format: str) -> dict[str, Any]:
    def encode(v: np.ndarray) -> Any:
        if encoding_format == "base64":
            return float32_base64(v)
        return v.tolist()

    data = [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": num_tokens, "total_tokens": num_tokens}}


def ollama_embed_body(model: str, vectors: np.ndarray, num_tokens: int, total_s: float,
                      load_s: float) -> dict[str, Any]:
    return {"model": model, "embeddings": vectors.tolist(), "total_duration": int(total_s * 1e9),
            "load_duration": int(load_s * 1e9), "prompt_eval_count": num_tokens}


def embedding_model_info(engine: Any) -> dict[str, Any]:
    """GGUF-style keys for /api/show of an embedding model."""
    info = engine.source.info
    arch = info.family
    return {"general.architecture": arch, "general.parameter_count": info.parameter_count,
            f"{arch}.context_length": engine.max_model_len, f"{arch}.embedding_length": engine.dim,
            f"{arch}.pooling_type": engine.source.pooling.mode}
