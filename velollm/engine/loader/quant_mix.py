"""The type each tensor gets when a float GGUF is quantized to one of Ollama's levels (Q8_0, Q4_K_M, Q4_K_S):
Ollama's rule (server/quantization.go, `newType` and `getTensorNewType`, its port of llama.cpp's
`llama_tensor_get_type`), followed where the two differ, since it is `ollama create -q` that VeloLLM answers for.

A tensor named `*weight` with two or more dimensions is quantized unless it is a norm, an MoE router, a position
or token-type embedding, a small convolution or RWKV mixing weight, a T5 relative bias, a per-layer token
embedding or a vision/projector tensor. The output layer (or the token embedding when it is tied) becomes Q6_K
(Q8_0 stays Q8_0); for Q4_K_M, `attn_v` and `ffn_down` of the first and last eighth of the layers and every third
between (`use_more_bits`) become Q6_K and a fused `attn_qkv` Q5_K; for Q4_K_S the first four `attn_v` and the
first eighth of the `ffn_down` become Q5_K; MoE models with 8 experts and MLA projections get Q8_0 where Ollama
says so. A row whose length is not a multiple of the chosen type's block falls back: Q4_K to Q5_0, Q5_K to Q5_1,
Q6_K to Q8_0, and to F16 when even those blocks do not fit.

Where Ollama and llama.cpp differ, Ollama is followed: it counts the `attn_v` and `ffn_down` tensors in file
order, llama.cpp in layer-number order (its weight map's comparer), the same for files written layer by layer
as converters write them (benchmarks/quantize.py: the 146 tensors of a 16-layer Llama-3.2-1B-shape file come
out identical); Ollama counts `n_ffn_down` as `blk.N` groups, llama.cpp as `ffn_down` tensors (the same for a
dense model); an output row that is not a multiple of 32 becomes F16 (llama.cpp gives up); the Qwen3-Next
linear-attention table and the MLA rule are Ollama's own, and llama.cpp's 70B `attn_v` rule, which needs the
model size Ollama does not know, is left out as Ollama leaves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

FILE_TYPES = {"Q8_0": 7, "Q4_K_S": 14, "Q4_K_M": 15}  # general.file_type (llama_ftype)
DEFAULT_TYPE = {"Q8_0": "Q8_0", "Q4_K_S": "Q4_K", "Q4_K_M": "Q4_K"}
BLOCK = {"Q4_K": 256, "Q5_K": 256, "Q6_K": 256, "Q8_0": 32, "Q5_0": 32, "Q5_1": 32, "F16": 1}
FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
_KEPT_PARTS = ("_norm.weight", "ffn_gate_inp.weight", "ffn_gate_inp_shexp.weight", "ssm_conv1d.weight",
               "shortconv.conv.weight", "time_mix_first.weight", "time_mix_w1.weight", "time_mix_w2.weight",
               "time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
               "attn_rel_b.weight", "per_layer_token_embd.weight", "mm.")
_MLA = ("attn_k_b.weight", "attn_v_b.weight", "attn_kv_a_mqa.weight", "attn_q_a.weight", "attn_q_b.weight")
_QWEN3_LINEAR = {".attn_q.weight": "Q4_K", ".attn_k.weight": "Q4_K", ".attn_v.weight": "Q6_K",
                 ".attn_output.weight": "Q4_K", ".attn_qkv.weight": "Q4_K", ".attn_gate.weight": "Q4_K",
                 ".ssm_ba.weight": "Q4_K", ".ssm_beta.weight": "Q4_K", ".ssm_alpha.weight": "Q4_K",
                 ".ssm_out.weight": "Q4_K", ".ffn_down_exps.weight": "Q6_K", ".ffn_down_shexp.weight": "Q6_K",
                 ".ffn_gate_exps.weight": "Q4_K", ".ffn_gate_shexp.weight": "Q4_K", ".ffn_up_exps.weight": "Q4_K",
                 ".ffn_up_shexp.weight": "Q4_K"}


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as the rule sees it: its name, GGUF shape (`shape[0]`: a row's length) and type name."""

    name: str
    shape: tuple[int, ...]
    kind: str


def is_quantized(name: str, num_dims: int) -> bool:
    """Whether Ollama quantizes a tensor of this name and rank at all."""
    return (name.endswith("weight") and num_dims >= 2 and not name.startswith("v.")
            and name not in ("position_embd.weight", "token_types.weight")
            and not any(part in name for part in _KEPT_PARTS))


def tensor_types(tensors: Sequence[TensorSpec], file_type: str, arch: str, expert_count: int = 0) -> list[str]:
    """The new type name of each tensor, in order (its own `kind` where it is kept)."""
    if file_type not in FILE_TYPES:
        raise ValueError(f"unsupported quantization type {file_type}")
    names = [t.name for t in tensors]
    state = _State(
        n_attn_v=sum(any(k in n for k in ("attn_v.weight", "attn_qkv.weight", "attn_kv_b.weight")) for n in names),
        n_ffn_down=len({".".join(n.split(".")[:2]) for n in names if n.startswith("blk.") and n.count(".") >= 2}),
        has_output="output.weight" in names, n_experts=max(1, expert_count))
    out = []
    for t in tensors:
        if not is_quantized(t.name, len(t.shape)):
            out.append(t.kind)
        elif arch in ("qwen3next", "qwen35", "qwen35moe") and file_type != "Q8_0" and _qwen3_linear(t.name):
            out.append(_qwen3_linear(t.name))
        else:
            out.append(_fit(state.choose(t, file_type), t.shape[0]))
    return out


@dataclass
class _State:
    n_attn_v: int
    n_ffn_down: int
    has_output: bool
    n_experts: int
    i_attn_v: int = 0
    i_ffn_down: int = 0

    def choose(self, t: TensorSpec, file_type: str) -> str:
        """Ollama's `getTensorNewType` before the block-size fallback (counts the attn_v / ffn_down seen)."""
        new, name = DEFAULT_TYPE[file_type], t.name
        k_m, k_s = file_type == "Q4_K_M", file_type == "Q4_K_S"
        if name in ("output.weight", "output_norm.weight") or (not self.has_output and name == "token_embd.weight"):
            if t.shape[0] % BLOCK[new]:
                return "Q8_0"
            return new if new == "Q8_0" else "Q6_K"
        if "attn_v.weight" in name:
            if k_m and use_more_bits(self.i_attn_v, self.n_attn_v):
                new = "Q6_K"
            elif k_s and self.i_attn_v < 4:
                new = "Q5_K"
            if self.n_experts == 8:
                new = "Q8_0"
            self.i_attn_v += 1
        elif "attn_k.weight" in name:
            new = "Q8_0" if self.n_experts == 8 else new
        elif any(part in name for part in _MLA):
            new = "Q8_0"
        elif "ffn_down" in name:
            if k_m and use_more_bits(self.i_ffn_down, self.n_ffn_down):
                new = "Q6_K"
            elif k_s and self.i_ffn_down < self.n_ffn_down // 8:
                new = "Q5_K"
            self.i_ffn_down += 1
        elif "attn_output.weight" in name:
            new = "Q5_K" if self.n_experts == 8 and file_type != "Q8_0" else new
        elif "attn_qkv.weight" in name:
            new = "Q5_K" if k_m else new
        return new


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's and Ollama's `use_more_bits`: the first and last eighth of the layers, and every third between."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def _fit(new: str, row: int) -> str:
    if row % BLOCK[new] == 0:
        return new
    new = FALLBACK.get(new, new)
    return new if row % BLOCK[new] == 0 else "F16"


def _qwen3_linear(name: str) -> str | None:
    return next((kind for suffix, kind in _QWEN3_LINEAR.items() if name.endswith(suffix)), None)
