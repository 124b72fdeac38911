"""A GGUF encoder (llama.cpp's `bert`, which also carries XLM-RoBERTa, and `nomic-bert`) as an EmbeddingSource.

llama.cpp's converter drops XLM-RoBERTa's first padding_idx + 1 position rows, so positions here
always start at 0. GGUF stores no Normalize module: vectors are L2-normalised, as Ollama returns them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from velollm.embed.config import EncoderConfig
from velollm.embed.pooling import GGUF_POOLING, Pooling
from velollm.embed.source import EmbeddingSource
from velollm.engine.loader.gguf import SUPPORTED_TYPES, _dequantize, model_info
from velollm.engine.loader.gguf_file import GGUFFile
from velollm.errors import ModelLoadError, UnsupportedModel

ENCODER_ARCHITECTURES = ("bert", "nomic-bert")


def _pooling_type(f: GGUFFile) -> int:
    return int(f.get(f"{f.get('general.architecture')}.pooling_type", 0) or 0)


def is_gguf_embedding(path: Path) -> bool:
    """An encoder, or a decoder (llama, qwen2, qwen3) whose metadata names a pooling (Qwen3-Embedding)."""
    from velollm.engine.loader.gguf import ARCHITECTURES

    with GGUFFile(path) as f:
        arch = f.get("general.architecture")
        return arch in ENCODER_ARCHITECTURES or (arch in ARCHITECTURES and _pooling_type(f) > 0)


def read_encoder_config(f: GGUFFile) -> EncoderConfig:
    arch = f.get("general.architecture")
    if arch not in ENCODER_ARCHITECTURES:
        raise UnsupportedModel(f"{f.path}: GGUF architecture {arch!r} is no encoder VeloLLM embeds with "
                               f"({list(ENCODER_ARCHITECTURES)})")
    for info in f.tensors.values():
        if info.type_name not in SUPPORTED_TYPES:
            raise UnsupportedModel(f"{f.path}: tensor {info.name!r} has tensor type {info.type_name}")
    p = f"{arch}."

    def key(name: str, default: object = None) -> object:
        value = f.get(p + name, default)
        if value is None:
            raise UnsupportedModel(f"{f.path}: GGUF metadata {p + name!r} is missing")
        return value

    nomic = arch == "nomic-bert"
    hidden = int(key("embedding_length"))  # type: ignore[arg-type]
    token_types = f.tensors.get("token_types.weight")
    return EncoderConfig(
        model_type="nomic-bert" if nomic else ("xlm-roberta" if f.get("tokenizer.ggml.model") == "t5" else "bert"),
        vocab_size=f.tensors["token_embd.weight"].shape[0],
        hidden_size=hidden,
        num_hidden_layers=int(key("block_count")),  # type: ignore[arg-type]
        num_attention_heads=int(key("attention.head_count")),  # type: ignore[arg-type]
        intermediate_size=int(key("feed_forward_length")),  # type: ignore[arg-type]
        max_position_embeddings=int(key("context_length")),  # type: ignore[arg-type]
        type_vocab_size=token_types.shape[0] if token_types is not None else 0,
        layer_norm_eps=float(key("attention.layer_norm_epsilon", 1e-12)),  # type: ignore[arg-type]
        activation="swiglu" if nomic else "gelu",
        rotary_base=float(key("rope.freq_base", 10000.0)) if nomic else 0.0,  # type: ignore[arg-type]
        qkv_bias=("blk.0.attn_qkv.bias" if nomic else "blk.0.attn_q.bias") in f.tensors,
        mlp_fc1_bias="blk.0.ffn_up.bias" in f.tensors,
        mlp_fc2_bias="blk.0.ffn_down.bias" in f.tensors,
    )


def gguf_embedding_source(path: str | Path, *, name: str | None = None, **info_overrides: object) -> EmbeddingSource:
    path = Path(path)
    with GGUFFile(path) as f:
        if f.get("general.architecture") not in ENCODER_ARCHITECTURES and _pooling_type(f) > 0:
            return _decoder_source(path, f, name, info_overrides)
        config = read_encoder_config(f)
        if config.type_vocab_size == 0:
            raise UnsupportedModel(f"{path}: no token_types.weight tensor")
        mode = GGUF_POOLING.get(int(f.get(f"{f.get('general.architecture')}.pooling_type", 1)))
        if mode is None:
            raise UnsupportedModel(f"{path}: pooling type {f.get('general.architecture')}.pooling_type is not "
                                   "mean, cls or last")
        meta = {k: v for k, v in f.metadata.items() if k.startswith("tokenizer.")}
        info = model_info(f, name or path.name, **info_overrides)

    def build(device: str, dtype: torch.dtype):
        from velollm.embed.encoder import EncoderModel

        model = EncoderModel.empty(config, device, dtype)
        model.load_weights(_iter_weights(path, config))
        return model.eval()

    def load_tokenizer():
        from velollm.embed.gguf_vocab import gguf_embedding_tokenizer

        return gguf_embedding_tokenizer(meta, config.max_tokens, str(path))

    return EmbeddingSource(info, "encoder", config.hidden_size, config.max_tokens, Pooling(mode, normalize=True),
                           build, load_tokenizer)


def _decoder_source(path: Path, f: GGUFFile, name: str | None, info_overrides: dict) -> EmbeddingSource:
    from velollm.embed.decoder import decoder_builder
    from velollm.engine.loader.gguf import gguf_source

    mode = GGUF_POOLING.get(_pooling_type(f))
    if mode is None:
        raise UnsupportedModel(f"{path}: pooling type {_pooling_type(f)} is not mean, cls or last")
    source = gguf_source(path, name=name, dtype="float32", device="cpu", **info_overrides)
    config = source.config.replace(tie_word_embeddings=True)  # no output head in embedding passes
    max_tokens = config.max_position_embeddings

    def load_tokenizer():
        backend = source.load_tokenizer().backend
        backend.enable_truncation(max_tokens)
        return backend

    return EmbeddingSource(source.info, "decoder", config.hidden_size, max_tokens, Pooling(mode, normalize=True),
                           decoder_builder(source.info, config, source.iter_weights, source.quantization),
                           load_tokenizer)


def _iter_weights(path: Path, config: EncoderConfig) -> Iterator[tuple[str, int | None, torch.Tensor]]:
    from velollm.embed.weights import gguf_target

    with GGUFFile(path) as f:
        for info in f.tensors.values():
            try:
                target = gguf_target(info.name, gelu_mlp=config.activation != "swiglu")
            except KeyError:
                raise ModelLoadError(f"{path}: unexpected tensor {info.name!r} for a {config.model_type} encoder") from None
            if target is not None:
                yield target[0], target[1], _dequantize(f, info).to(torch.float32, copy=True)
