"""Builders of tiny random GGUF models (written the way llama.cpp's convert_hf_to_gguf.py writes them)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

CORPUS = """\
The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore, and they're
selling well: 12 shells on Monday, 345 on Tuesday, 6789 by the end of the week. Don't you think?
def tokenize(text: str) -> list[int]:
    return [ord(c) for c in text if c.isalnum()]  # keep letters and digits
for (int i = 0; i < n; ++i) { total += values[i] * 2; }
Café, naïve, résumé, façade, Zürich, São Paulo, Ελληνικά, русский язык, 日本語のテキスト.
It's the model's job; we'll see what you've done, I'm sure, she'd agree. HELLO World hello world.
"""

VARIED_TEXT = (
    "Hello world! It's a TEST of the tokenizer, isn't it? We'LL see.\n"
    "def f(x):\n    return x**2  # square\n\n\n"
    "    indented   with   runs    of spaces\t\ttabs\r\nCRLF line\n"
    "Numbers: 1 12 123 1234 12345 3.14159 -42 1e10\n"
    "Unicode: café naïve Zürich Ελληνικά русский 日本語 中文字符 한국어\n"
    "Emoji: 🦙🚀 👩‍💻 ✨ done.\n"
    "<|im_start|>user\nhi<|im_end|><|eot_id|> <tool_call>{\"a\": 1}</tool_call> [INST] x [/INST]"
    "   trailing spaces   \n\n"
)

SPM_SPECIALS = ("<unk>", "<s>", "</s>")
BPE_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|im_start|>", "<|im_end|>")
USER_DEFINED = ("<tool_call>", "</tool_call>")
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@dataclass
class TokMeta:
    model: str  # "gpt2" | "llama"
    tokens: list[str]
    types: list[int]
    bos: int
    eos: int
    pre: str | None = None
    merges: list[str] = field(default_factory=list)
    scores: list[float] | None = None
    unk: int | None = None
    add_bos: bool = True
    chat_template: str | None = CHAT_TEMPLATE  # None: a GGUF without tokenizer.chat_template


def bpe_tokenizer(pre: str = "llama-bpe", vocab_size: int = 600) -> TokMeta:
    """A byte-level BPE trained on CORPUS, plus control and user-defined tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([CORPUS] * 4, trainer)
    spec = json.loads(tok.to_str())
    vocab = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    types = [1] * len(tokens)
    for t in BPE_SPECIALS:
        tokens.append(t)
        types.append(3)
    for t in USER_DEFINED:
        tokens.append(t)
        types.append(4)
    return TokMeta("gpt2", tokens, types, bos=tokens.index("<|begin_of_text|>"),
                   eos=tokens.index("<|end_of_text|>"), pre=pre, merges=merges, add_bos=pre != "qwen2")


def spm_tokenizer(vocab_size: int = 700) -> TokMeta:
    """A SentencePiece-style vocabulary: <unk>/<s>/</s>, 256 byte tokens, scored pieces."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False)
    tok.train_from_iterator([CORPUS] * 4, trainer)
    spec = json.loads(tok.to_str())
    pieces = [t for t, _ in sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])]
    tokens = [*SPM_SPECIALS, *(f"<0x{b:02X}>" for b in range(256))]
    types = [2, 3, 3, *([6] * 256)]
    scores = [0.0] * len(tokens)
    for i, piece in enumerate(pieces):
        tokens.append(piece)
        types.append(1)
        scores.append(-float(i))  # later merges score lower, as in a SentencePiece BPE model
    for t, kind in (("[INST]", 3), ("[/INST]", 3), *((u, 4) for u in USER_DEFINED)):
        tokens.append(t)
        types.append(kind)
        scores.append(0.0)
    return TokMeta("llama", tokens, types, bos=1, eos=2, scores=scores, unk=0)


@dataclass(frozen=True)
class ArchSpec:
    arch: str  # llama | qwen2 | qwen3
    hidden: int = 256
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 512
    head_dim: int = 64
    tied: bool = False
    rope_theta: float = 10000.0
    llama3_rope: bool = False
    context: int = 1024
    eps: float = 1e-5


def state_dict(spec: ArchSpec, vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """HF-named float32 weights scaled so logits spread over a few nats (greedy ties are rare)."""
    g = torch.Generator().manual_seed(seed)

    def lin(out: int, inp: int, gain: float = 1.0) -> torch.Tensor:
        return torch.randn(out, inp, generator=g) * gain / inp**0.5

    def norm(n: int) -> torch.Tensor:
        return 1.0 + 0.1 * torch.randn(n, generator=g)

    h, q, kv = spec.hidden, spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim
    # A tied embedding is also the output matrix: scale it so logits stay a few nats wide.
    embed_scale = 3.0 / h**0.5 if spec.tied else 1.0
    sd = {"model.embed_tokens.weight": embed_scale * torch.randn(vocab_size, h, generator=g), "model.norm.weight": norm(h)}
    if not spec.tied:
        sd["lm_head.weight"] = lin(vocab_size, h, 3.0)
    for i in range(spec.layers):
        p = f"model.layers.{i}."
        sd |= {p + "input_layernorm.weight": norm(h), p + "post_attention_layernorm.weight": norm(h),
               p + "self_attn.q_proj.weight": lin(q, h), p + "self_attn.k_proj.weight": lin(kv, h),
               p + "self_attn.v_proj.weight": lin(kv, h), p + "self_attn.o_proj.weight": lin(h, q, 0.5),
               p + "mlp.gate_proj.weight": lin(spec.intermediate, h), p + "mlp.up_proj.weight": lin(spec.intermediate, h),
               p + "mlp.down_proj.weight": lin(h, spec.intermediate, 0.5)}
        if spec.arch == "qwen2":
            sd |= {p + f"self_attn.{n}_proj.bias": 0.1 * torch.randn(d, generator=g) for n, d in (("q", q), ("k", kv), ("v", kv))}
        if spec.arch == "qwen3":
            sd |= {p + "self_attn.q_norm.weight": norm(spec.head_dim), p + "self_attn.k_norm.weight": norm(spec.head_dim)}
    return sd


HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def gguf_name(name: str) -> str:
    if name in HF_TO_GGUF:
        return HF_TO_GGUF[name]
    _, _, layer, rest = name.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{HF_TO_GGUF[module]}.{kind}"


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.permute."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_freqs(spec: ArchSpec, factor: float = 8.0) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.generate_extra_tensors for rope_type llama3."""
    import math

    base, dim, low, high, old = spec.rope_theta, spec.head_dim, 1.0, 4.0, 8192
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < old / high:
            out.append(1)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


FILE_TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "BF16": 32}


def write_gguf(path: Path, spec: ArchSpec, sd: dict[str, torch.Tensor], tok: TokMeta, qtype: str = "F32",
               extra_kv: dict[str, int | bool] | None = None) -> Path:
    """`extra_kv`: more metadata (uint32 or bool values), e.g. an embedding model's pooling type."""
    import gguf

    w = gguf.GGUFWriter(str(path), spec.arch)
    a = spec.arch
    w.add_name(f"tiny-{a}")
    w.add_file_type(FILE_TYPES[qtype])
    w.add_uint32(f"{a}.context_length", spec.context)
    w.add_uint32(f"{a}.embedding_length", spec.hidden)
    w.add_uint32(f"{a}.block_count", spec.layers)
    w.add_uint32(f"{a}.feed_forward_length", spec.intermediate)
    w.add_uint32(f"{a}.attention.head_count", spec.heads)
    w.add_uint32(f"{a}.attention.head_count_kv", spec.kv_heads)
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", spec.eps)
    w.add_float32(f"{a}.rope.freq_base", spec.rope_theta)
    w.add_uint32(f"{a}.rope.dimension_count", spec.head_dim)
    if spec.head_dim != spec.hidden // spec.heads:
        w.add_uint32(f"{a}.attention.key_length", spec.head_dim)
        w.add_uint32(f"{a}.attention.value_length", spec.head_dim)
    w.add_tokenizer_model(tok.model)
    if tok.pre:
        w.add_tokenizer_pre(tok.pre)
    w.add_token_list(tok.tokens)
    w.add_token_types(tok.types)
    if tok.scores is not None:
        w.add_token_scores(tok.scores)
    if tok.merges:
        w.add_token_merges(tok.merges)
    w.add_bos_token_id(tok.bos)
    w.add_eos_token_id(tok.eos)
    if tok.unk is not None:
        w.add_unk_token_id(tok.unk)
    w.add_add_bos_token(tok.add_bos)
    if tok.chat_template is not None:
        w.add_chat_template(tok.chat_template)
    for key, value in (extra_kv or {}).items():
        (w.add_bool if isinstance(value, bool) else w.add_uint32)(key, value)
    if spec.llama3_rope:
        w.add_tensor("rope_freqs.weight", llama3_rope_freqs(spec))
    q = gguf.GGMLQuantizationType[qtype]
    for name, t in sd.items():
        data = t.numpy().astype(np.float32)
        if a == "llama" and ".q_proj." in name:
            data = permute(data, spec.heads)
        elif a == "llama" and ".k_proj." in name:
            data = permute(data, spec.kv_heads)
        if data.ndim == 1 or qtype == "F32":
            w.add_tensor(gguf_name(name), data)
        else:
            w.add_tensor(gguf_name(name), gguf.quants.quantize(data, q), raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def hf_model(config, sd: dict[str, torch.Tensor]):  # type: ignore[no-untyped-def]
    """A transformers model for a VeloLLM ModelConfig, loaded with `sd` (the reference forward)."""
    import transformers

    kwargs = dict(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads, head_dim=config.head_dim, rms_norm_eps=config.rms_norm_eps,
        max_position_embeddings=config.max_position_embeddings, tie_word_embeddings=config.tie_word_embeddings,
    )
    rope: dict = {"rope_type": "default", "rope_theta": config.rope_theta}
    if config.rope_scaling is not None:
        s = config.rope_scaling
        rope = {"rope_type": "llama3", "rope_theta": config.rope_theta, "factor": s.factor,
                "low_freq_factor": s.low_freq_factor, "high_freq_factor": s.high_freq_factor,
                "original_max_position_embeddings": s.original_max_position_embeddings}
    cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
           "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
           "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM)}[config.model_type]
    hf_config = cls[0](**kwargs, rope_parameters=rope)
    if config.model_type == "llama":
        hf_config.attention_bias = config.attention_bias
    model = cls[1](hf_config).eval()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert set(missing) <= {"lm_head.weight"}, missing
    if config.tie_word_embeddings:
        model.tie_weights()
    return model
