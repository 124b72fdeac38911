"""Model architecture registry: config.json `architectures` -> model class."""

from __future__ import annotations

from torch import nn

from velollm.config import ModelConfig
from velollm.engine.models.llama import LlamaForCausalLM
from velollm.engine.models.qwen3 import Qwen3ForCausalLM
from velollm.errors import UnsupportedModel

# Mistral and Qwen2 share Llama's layout: Qwen2's qkv bias comes from ModelConfig.attention_bias.
MODEL_REGISTRY: dict[str, type[nn.Module]] = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "MistralForCausalLM": LlamaForCausalLM,
    "Qwen2ForCausalLM": LlamaForCausalLM,
    "Qwen3ForCausalLM": Qwen3ForCausalLM,
}


def model_class(config: ModelConfig) -> type[nn.Module]:
    try:
        return MODEL_REGISTRY[config.architecture]
    except KeyError:
        raise UnsupportedModel(f"unsupported architecture {config.architecture!r}; "
                               f"VeloLLM runs {sorted(MODEL_REGISTRY)}") from None
