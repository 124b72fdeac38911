"""EncoderConfig: the shape of a BERT-family encoder (bert, xlm-roberta, nomic-bert), from HF or GGUF."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from velollm.errors import UnsupportedModel

ACTIVATIONS = ("gelu", "gelu_tanh", "swiglu")
# config.json hidden_act -> ours (transformers' ACT2FN names).
_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                   "gelu_fast": "gelu_tanh", "swiglu": "swiglu"}
ENCODER_TYPES = {"bert": "bert", "xlm-roberta": "xlm-roberta", "roberta": "xlm-roberta",
                 "nomic_bert": "nomic-bert", "nomic-bert": "nomic-bert"}


@dataclass(frozen=True)
class EncoderConfig:
    """A post-LayerNorm bidirectional encoder.

    bert / xlm-roberta: learned absolute positions (xlm-roberta's start at `position_offset`, its
    padding_idx + 1), separate biased q/k/v, GELU MLP. nomic-bert: rotary positions, fused qkv,
    SwiGLU MLP (up * silu(gate)), optional biases.
    """

    model_type: str  # "bert" | "xlm-roberta" | "nomic-bert"
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    activation: str = "gelu"
    position_offset: int = 0
    rotary_base: float = 0.0  # > 0: rotary positions (nomic-bert) instead of a position table
    qkv_bias: bool = True
    mlp_fc1_bias: bool = True
    mlp_fc2_bias: bool = True

    def __post_init__(self) -> None:
        if self.model_type not in ("bert", "xlm-roberta", "nomic-bert"):
            raise ValueError(f"model_type must be bert, xlm-roberta or nomic-bert, got {self.model_type!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of {self.num_attention_heads} heads")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary(self) -> bool:
        return self.rotary_base > 0

    @property
    def max_tokens(self) -> int:
        """The longest input the position table (or the trained rotary context) allows."""
        return self.max_position_embeddings - self.position_offset

    def replace(self, **changes: Any) -> EncoderConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf_config(cls, raw: dict[str, Any]) -> EncoderConfig:
        """From a config.json of BertModel, XLMRobertaModel (or RobertaModel) or NomicBertModel."""
        model_type = ENCODER_TYPES.get(str(raw.get("model_type", "")))
        if model_type is None:
            raise UnsupportedModel(f"model_type {raw.get('model_type')!r} is no BERT-family encoder "
                                   f"(VeloLLM embeds with {sorted(set(ENCODER_TYPES.values()))})")
        if model_type == "nomic-bert":
            return _nomic_from_hf(raw)
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise UnsupportedModel(f"position_embedding_type {raw['position_embedding_type']!r} is not supported")
        act = _HF_ACTIVATIONS.get(str(raw.get("hidden_act", "gelu")))
        if act is None or act == "swiglu":
            raise UnsupportedModel(f"hidden_act {raw.get('hidden_act')!r} is not supported")
        pad = int(raw.get("pad_token_id", 1) or 0)
        return cls(
            model_type=model_type,
            vocab_size=int(raw["vocab_size"]),
            hidden_size=int(raw["hidden_size"]),
            num_hidden_layers=int(raw["num_hidden_layers"]),
            num_attention_heads=int(raw["num_attention_heads"]),
            intermediate_size=int(raw["intermediate_size"]),
            max_position_embeddings=int(raw["max_position_embeddings"]),
            type_vocab_size=int(raw.get("type_vocab_size", 2)),
            layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
            activation=act,
            position_offset=pad + 1 if model_type == "xlm-roberta" else 0,
        )


def _nomic_from_hf(raw: dict[str, Any]) -> EncoderConfig:
    act = str(raw.get("activation_function", "swiglu"))
    if act != "swiglu" or raw.get("prenorm") or float(raw.get("rotary_emb_fraction", 1.0)) != 1.0:
        raise UnsupportedModel("nomic-bert with a non-SwiGLU MLP, pre-norm layers or partial rotary is not supported")
    if raw.get("rotary_emb_interleaved") or raw.get("rotary_scaling_factor"):
        raise UnsupportedModel("nomic-bert with interleaved or scaled rotary embeddings is not supported")
    hidden = int(raw["n_embd"])
    return EncoderConfig(
        model_type="nomic-bert",
        vocab_size=int(raw["vocab_size"]),
        hidden_size=hidden,
        num_hidden_layers=int(raw["n_layer"]),
        num_attention_heads=int(raw["n_head"]),
        intermediate_size=int(raw.get("n_inner") or 4 * hidden),
        max_position_embeddings=int(raw.get("n_positions", 2048)),
        type_vocab_size=int(raw.get("type_vocab_size", 2)),
        layer_norm_eps=float(raw.get("layer_norm_epsilon", 1e-12)),
        activation="swiglu",
        rotary_base=float(raw.get("rotary_emb_base", 10000.0)),
        qkv_bias=bool(raw.get("qkv_proj_bias", True)),
        mlp_fc1_bias=bool(raw.get("mlp_fc1_bias", True)),
        mlp_fc2_bias=bool(raw.get("mlp_fc2_bias", True)),
    )
