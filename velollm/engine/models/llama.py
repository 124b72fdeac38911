"""Llama 2/3/3.1/3.2 and Mistral; Qwen2 (qkv bias) through ModelConfig.attention_bias. HF-shaped modules."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from velollm import kernels
from velollm.config import ModelConfig
from velollm.engine.forward_context import get_kernel_switches
from velollm.engine.models.layers import PagedAttention, RMSNorm, RotaryEmbedding, SiluAndMul
from velollm.engine.models.quantized_linear import QUANTIZED_MODULES, QuantizedLinear
from velollm.errors import ModelLoadError

# checkpoint name fragment -> (our fused parameter fragment, shard index)
_STACKED = {
    ".q_proj.": (".qkv_proj.", 0),
    ".k_proj.": (".qkv_proj.", 1),
    ".v_proj.": (".qkv_proj.", 2),
    ".gate_proj.": (".gate_up_proj.", 0),
    ".up_proj.": (".gate_up_proj.", 1),
}
# fused child module -> its parent's method giving the shard sizes (for quantize_linears)
FUSED_LINEARS = {"qkv_proj": "shard_sizes", "gate_up_proj": "shard_sizes"}


class LlamaAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.q_size = config.num_attention_heads * config.head_dim
        self.kv_size = config.num_key_value_heads * config.head_dim
        self.qkv_proj = nn.Linear(config.hidden_size, self.q_size + 2 * self.kv_size, bias=config.attention_bias)
        self.o_proj = nn.Linear(self.q_size, config.hidden_size, bias=False)
        self.attn = PagedAttention(layer_idx, config.num_attention_heads, config.num_key_value_heads, config.head_dim, rotary)

    def shard_sizes(self) -> list[int]:
        return [self.q_size, self.kv_size, self.kv_size]

    def project_qkv(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.qkv_proj(hidden_states).split([self.q_size, self.kv_size, self.kv_size], dim=-1)

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
        q, k, v = self.project_qkv(hidden_states)
        return self.o_proj(self.attn(positions, q, k, v))


class LlamaMLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act = SiluAndMul()

    def shard_sizes(self) -> list[int]:
        return [self.intermediate_size, self.intermediate_size]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)
        down = self.down_proj
        fusable = get_kernel_switches().silu_down_gemv and isinstance(down, nn.Linear)
        if fusable and kernels.silu_down_fused(gate_up, down.weight):  # a few decode rows
            return kernels.silu_mul_gemv(gate_up, down.weight)
        return down(self.act(gate_up))


class LlamaDecoderLayer(nn.Module):
    attention_cls: type[LlamaAttention] = LlamaAttention

    def __init__(self, config: ModelConfig, layer_idx: int, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.self_attn = self.attention_cls(config, layer_idx, rotary)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor, residual: torch.Tensor | None):
        if residual is None:
            residual = hidden_states
            hidden_states = self.input_layernorm(hidden_states)
        else:
            hidden_states, residual = self.input_layernorm(hidden_states, residual)
        hidden_states = self.self_attn(positions, hidden_states)
        hidden_states, residual = self.post_attention_layernorm(hidden_states, residual)
        return self.mlp(hidden_states), residual


class LlamaModel(nn.Module):
    def __init__(self, config: ModelConfig, layer_cls: type[LlamaDecoderLayer]) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.rotary = RotaryEmbedding(config.head_dim, config.max_position_embeddings, config.rope_theta, config.rope_scaling)
        self.layers = nn.ModuleList(layer_cls(config, i, self.rotary) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        hidden_states = self.embed_tokens(input_ids)
        residual = None
        for layer in self.layers:
            hidden_states, residual = layer(positions, hidden_states, residual)
        hidden_states, _ = self.norm(hidden_states, residual)
        return hidden_states


class LlamaForCausalLM(nn.Module):
    layer_cls: type[LlamaDecoderLayer] = LlamaDecoderLayer

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaModel(config, self.layer_cls)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share the embedding with lm_head when tied (again after to_empty(), which unshares them)."""
        if not self.config.tie_word_embeddings:
            return
        if isinstance(self.lm_head, QuantizedLinear):
            self.lm_head.tie_to(self.model.embed_tokens)
        else:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, positions)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden_states).float()

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Map checkpoint names onto our modules once, fusing q/k/v and gate/up as they stream by.
        Quantized layers (quantize_linears) take their weights as shards, stacked once all arrived."""
        params = dict(self.named_parameters())
        slots = {f"{name}.weight": m for name, m in self.named_modules() if isinstance(m, QUANTIZED_MODULES)}
        missing = set(params) | set(slots)
        if self.config.tie_word_embeddings:
            missing.discard("lm_head.weight")
        for name, tensor in weights:
            if "rotary_emb" in name or (name == "lm_head.weight" and self.config.tie_word_embeddings):
                continue
            target, shard = _fused_target(name)
            if target in slots:
                slots[target].load_shard(shard or 0, tensor)
                missing.discard(target)
                continue
            param = params.get(target)
            if param is None:
                raise ModelLoadError(f"checkpoint tensor {name!r} has no place in {type(self).__name__}")
            if shard is None:
                _copy(param, tensor, name)
            else:
                module = self.get_submodule(target.rsplit(".", 2)[0])
                sizes = module.shard_sizes()
                offset = sum(sizes[:shard])
                _copy(param.narrow(0, offset, sizes[shard]), tensor, name)
            missing.discard(target)
        if missing:
            raise ModelLoadError(f"checkpoint lacks tensors for {sorted(missing)[:5]}")
        for module in slots.values():
            module.finish()


def _fused_target(name: str) -> tuple[str, int | None]:
    for fragment, (fused, shard) in _STACKED.items():
        if fragment in name:
            return name.replace(fragment, fused), shard
    return name, None


def _copy(dst: torch.Tensor, src: torch.Tensor, name: str) -> None:
    if tuple(dst.shape) != tuple(src.shape):
        raise ModelLoadError(f"tensor {name!r} has shape {tuple(src.shape)}, expected {tuple(dst.shape)}")
    dst.copy_(src)
