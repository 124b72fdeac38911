"""Tiny random BERT-family models as HF / sentence-transformers folders, and their GGUF conversions.

The BERT and nomic-bert models use all-MiniLM-L6-v2's real WordPiece vocabulary (so that the GGUF
`bert` tokenizer meets real words); XLM-RoBERTa gets a small unigram vocabulary trained here.
GGUF files are written the way llama.cpp's convert_hf_to_gguf.py writes BertModel, XLMRobertaModel
and NomicBertModel.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

CORPUS = (
    "The quick brown fox jumps over the lazy dog. Embeddings map sentences to vectors. "
    "Retrieval augmented generation needs a vector store and a good encoder. "
    "Café naïve résumé Zürich, Ελληνικά, русский язык. Numbers 12 345 6789. "
) * 20

TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Embeddings map sentences to vectors; retrieval needs a good encoder. " * 2,
    "café naïve résumé Zürich",
    "a",
    "Numbers 12 345 6789 and punctuation!?",
]

TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
            max_position_embeddings=128)


def minilm_folder() -> Path:
    from velollm.embed.resolve import default_model_folder

    return default_model_folder()


def _modules_json(folder: Path, mode: str, normalize: bool) -> None:
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    flags = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens",
             "last": "pooling_mode_lasttoken", "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens"}
    pooling = {"word_embedding_dimension": TINY["hidden_size"], **{flag: m == mode for m, flag in flags.items()}}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": False}))


def tiny_bert(folder: Path, mode: str = "mean", normalize: bool = True, seed: int = 0) -> Path:
    """A random BertModel with MiniLM's tokenizer, saved as a sentence-transformers folder."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    src = minilm_folder()
    config = BertConfig(vocab_size=30522, initializer_range=0.2, **TINY)
    BertModel(config).eval().save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(src / name, folder / name)
    _modules_json(folder, mode, normalize)
    return folder


def tiny_xlm_roberta(folder: Path, seed: int = 0) -> Path:
    """A random XLMRobertaModel with a unigram tokenizer trained on CORPUS (plain HF folder)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaModel

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(" {2,}", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator([CORPUS], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                            pad_token="<pad>").save_pretrained(folder)
    torch.manual_seed(seed)
    config = XLMRobertaConfig(vocab_size=tok.get_vocab_size(), pad_token_id=1, bos_token_id=0, eos_token_id=2,
                              type_vocab_size=1, initializer_range=0.2, **{**TINY, "max_position_embeddings": 130})
    XLMRobertaModel(config, add_pooling_layer=False).eval().save_pretrained(folder)
    return folder


NOMIC_CONFIG = dict(model_type="nomic_bert", architectures=["NomicBertModel"], vocab_size=30522, n_embd=64, n_head=4,
                    n_layer=2, n_inner=96, n_positions=256, type_vocab_size=2, layer_norm_epsilon=1e-12,
                    rotary_emb_base=1000.0, rotary_emb_fraction=1.0, rotary_emb_interleaved=False,
                    activation_function="swiglu", prenorm=False, qkv_proj_bias=False, mlp_fc1_bias=False,
                    mlp_fc2_bias=False)


def nomic_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """NomicBertModel's tensor names and shapes (its code is remote: the weights are written directly)."""
    g = torch.Generator().manual_seed(seed)
    c = NOMIC_CONFIG
    h, inner = c["n_embd"], c["n_inner"]

    def rand(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    sd = {"embeddings.word_embeddings.weight": rand(c["vocab_size"], h),
          "embeddings.token_type_embeddings.weight": rand(2, h),
          "emb_ln.weight": 1 + rand(h, scale=0.1), "emb_ln.bias": rand(h, scale=0.1)}
    for i in range(c["n_layer"]):
        p = f"encoder.layers.{i}."
        sd |= {p + "attn.Wqkv.weight": rand(3 * h, h), p + "attn.out_proj.weight": rand(h, h),
               p + "mlp.fc11.weight": rand(inner, h), p + "mlp.fc12.weight": rand(inner, h),
               p + "mlp.fc2.weight": rand(h, inner),
               p + "norm1.weight": 1 + rand(h, scale=0.1), p + "norm1.bias": rand(h, scale=0.1),
               p + "norm2.weight": 1 + rand(h, scale=0.1), p + "norm2.bias": rand(h, scale=0.1)}
    return sd


def tiny_nomic_bert(folder: Path, seed: int = 0) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(NOMIC_CONFIG))
    save_file(nomic_state_dict(seed), str(folder / "model.safetensors"))
    src = minilm_folder()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(src / name, folder / name)
    return folder


# --- GGUF, as convert_hf_to_gguf.py writes it ---------------------------------------------------------

_BERT_BLOCK = {
    "attention.self.query": "attn_q", "attention.self.key": "attn_k", "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output", "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up", "output.dense": "ffn_down", "output.LayerNorm": "layer_output_norm",
}
_NOMIC_BLOCK = {"attn.Wqkv": "attn_qkv", "attn.out_proj": "attn_output", "norm1": "attn_output_norm",
                "mlp.fc11": "ffn_up", "mlp.fc12": "ffn_gate", "mlp.fc2": "ffn_down", "norm2": "layer_output_norm"}
_GLOBAL = {"embeddings.word_embeddings": "token_embd", "embeddings.position_embeddings": "position_embd",
           "embeddings.token_type_embeddings": "token_types", "embeddings.LayerNorm": "token_embd_norm",
           "emb_ln": "token_embd_norm"}


def gguf_name(hf: str) -> str | None:
    module, _, suffix = hf.rpartition(".")
    if module in _GLOBAL:
        return f"{_GLOBAL[module]}.{suffix}"
    parts = module.split(".")
    if parts[0] == "encoder" and parts[1] in ("layer", "layers"):
        rest = ".".join(parts[3:])
        table = _NOMIC_BLOCK if parts[1] == "layers" else _BERT_BLOCK
        return f"blk.{parts[2]}.{table[rest]}.{suffix}" if rest in table else None
    return None


def _phantom(token: str) -> str:
    if token.startswith("[") and token.endswith("]"):
        return token
    if token.startswith("##"):
        return token[2:]
    return "\u2581" + token


def write_encoder_gguf(path: Path, folder: Path, arch: str, pooling_type: int = 1, ftype: str = "F32") -> Path:
    """Convert an HF folder written above into a GGUF file (`arch`: bert, xlm-roberta, nomic-bert)."""
    import gguf
    from safetensors.torch import load_file

    config = json.loads((folder / "config.json").read_text())
    gguf_arch = "nomic-bert" if arch == "nomic-bert" else "bert"
    w = gguf.GGUFWriter(str(path), gguf_arch)
    nomic = arch == "nomic-bert"
    get = (lambda k, n: config[n]) if nomic else (lambda k, n: config[k])
    w.add_context_length(get("max_position_embeddings", "n_positions") - (2 if arch == "xlm-roberta" else 0))
    w.add_embedding_length(get("hidden_size", "n_embd"))
    w.add_feed_forward_length(get("intermediate_size", "n_inner"))
    w.add_block_count(get("num_hidden_layers", "n_layer"))
    w.add_head_count(get("num_attention_heads", "n_head"))
    w.add_layer_norm_eps(get("layer_norm_eps", "layer_norm_epsilon"))
    w.add_causal_attention(False)
    w.add_pooling_type(gguf.PoolingType(pooling_type))
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if ftype == "F32" else gguf.LlamaFileType.MOSTLY_F16)
    if nomic:
        w.add_rope_freq_base(config["rotary_emb_base"])
    _write_vocab(w, folder, arch)
    sd = load_file(str(folder / "model.safetensors"))
    for hf, tensor in sd.items():
        name = gguf_name(hf)
        if name is None:
            continue
        if hf == "embeddings.position_embeddings.weight" and arch == "xlm-roberta":
            tensor = tensor[2:]  # the converter drops the padding_idx + 1 unused rows
        data = tensor.float().numpy()
        if ftype == "F16" and data.ndim == 2 and not name.startswith(("token_types", "position_embd")):
            data = data.astype(np.float16)
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _write_vocab(w, folder: Path, arch: str) -> None:
    import gguf

    tok = json.loads((folder / "tokenizer.json").read_text())
    if arch == "xlm-roberta":
        pieces = tok["model"]["vocab"]
        tokens, scores = [p for p, _ in pieces], [float(s) for _, s in pieces]
        specials = {"<s>", "<pad>", "</s>"}
        types = [gguf.TokenType.CONTROL if t in specials else gguf.TokenType.UNKNOWN if t == "<unk>"
                 else gguf.TokenType.NORMAL for t in tokens]
        w.add_tokenizer_model("t5")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(0)
        w.add_pad_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(3)
        w.add_sep_token_id(2)
        w.add_add_bos_token(True)
        w.add_add_eos_token(True)
        w.add_add_space_prefix(True)
        w.add_remove_extra_whitespaces(True)
        w.add_token_type_count(1)
        return
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    tokens = [_phantom(t) for t, _ in vocab]
    types = [gguf.TokenType.CONTROL if t in ("[CLS]", "[SEP]", "[PAD]", "[MASK]") else
             gguf.TokenType.UNKNOWN if t == "[UNK]" else gguf.TokenType.NORMAL for t, _ in vocab]
    w.add_tokenizer_model("bert")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_type_count(2)
    ids = dict(vocab)
    w.add_bos_token_id(ids["[CLS]"])
    w.add_eos_token_id(ids["[SEP]"])
    w.add_sep_token_id(ids["[SEP]"])
    w.add_unk_token_id(ids["[UNK]"])
    w.add_pad_token_id(ids["[PAD]"])
    w.add_mask_token_id(ids["[MASK]"])


def tiny_qwen3_embedding(folder: Path, seed: int = 0) -> Path:
    """A random Qwen3Model saved as Qwen3-Embedding is: sentence-transformers folder, last-token pooling,
    Normalize, a tokenizer that appends <|endoftext|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([CORPUS], trainer)
    eos = tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(single="$A <|endoftext|>", special_tokens=[("<|endoftext|>", eos)])
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>").save_pretrained(folder)
    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=256,
                         rms_norm_eps=1e-6, rope_theta=10000.0, initializer_range=0.2, tie_word_embeddings=True,
                         eos_token_id=eos, pad_token_id=eos)
    config.architectures = ["Qwen3ForCausalLM"]
    Qwen3Model(config).eval().save_pretrained(folder)
    _modules_json(folder, "last", normalize=True)
    return folder
