"""GGUF files of real model shapes for benchmarks (speed ignores values).

`write_random_quantized` writes a Q4_K_M / Q4_0 / Q8_0 file in seconds: each tensor gets the type
llama.cpp's quantizer gives it for that file type (llama-quant.cpp: output.weight Q6_K except for
Q8_0; in Q4_K_M, attn_v and ffn_down in Q6_K for the first and last eighth of the layers and every
third one between) and random blocks with small finite float16 scales. Quantizing 16 GB of F16 weights
with llama.cpp takes minutes that a GPU session does not have; the kernels read the same bytes either way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHAPES = {
    "llama-3.2-1b": dict(hidden=2048, layers=16, heads=32, kv_heads=8, intermediate=8192, vocab=128256,
                         rope_theta=500000.0, context=131072, tied=True),
    "llama-3.2-3b": dict(hidden=3072, layers=28, heads=24, kv_heads=8, intermediate=8192, vocab=128256,
                         rope_theta=500000.0, context=131072, tied=True),
    "llama-3.1-8b": dict(hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=14336, vocab=128256,
                         rope_theta=500000.0, context=131072, tied=False),
}
# byte offsets of each block's float16 fields (scales, mins)
_F16_FIELDS = {"Q8_0": (0,), "Q4_0": (0,), "Q4_K": (0, 2), "Q6_K": (208,)}


def tensor_shapes(shape: dict) -> dict[str, tuple[int, ...]]:
    h, vocab = shape["hidden"], shape["vocab"]
    head_dim = h // shape["heads"]
    kv = shape["kv_heads"] * head_dim
    shapes = {"token_embd.weight": (vocab, h), "output_norm.weight": (h,)}
    if not shape.get("tied", True):
        shapes["output.weight"] = (vocab, h)
    for i in range(shape["layers"]):
        shapes |= {f"blk.{i}.attn_norm.weight": (h,), f"blk.{i}.ffn_norm.weight": (h,),
                   f"blk.{i}.attn_q.weight": (h, h), f"blk.{i}.attn_k.weight": (kv, h),
                   f"blk.{i}.attn_v.weight": (kv, h), f"blk.{i}.attn_output.weight": (h, h),
                   f"blk.{i}.ffn_gate.weight": (shape["intermediate"], h),
                   f"blk.{i}.ffn_up.weight": (shape["intermediate"], h),
                   f"blk.{i}.ffn_down.weight": (h, shape["intermediate"])}
    return shapes


def write_header(w, shape: dict, file_type: int) -> None:  # type: ignore[no-untyped-def]
    """Llama hyperparameters and a SentencePiece-style vocabulary of `shape["vocab"]` tokens."""
    h, vocab = shape["hidden"], shape["vocab"]
    for key, value in (("context_length", shape["context"]), ("embedding_length", h),
                       ("block_count", shape["layers"]), ("feed_forward_length", shape["intermediate"]),
                       ("attention.head_count", shape["heads"]), ("attention.head_count_kv", shape["kv_heads"]),
                       ("rope.dimension_count", h // shape["heads"])):
        w.add_uint32(f"llama.{key}", value)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_float32("llama.rope.freq_base", shape["rope_theta"])
    w.add_file_type(file_type)
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256))]
    tokens += [f"▁w{i}" for i in range(vocab - len(tokens))]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([-float(i) for i in range(vocab)])
    w.add_token_types([2, 3, 3, *([6] * 256), *([1] * (vocab - 259))])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)


def _more_bits(i: int, n: int) -> bool:
    """llama-quant.cpp use_more_bits: the layers whose attn_v / ffn_down Q4_K_M keeps in Q6_K."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def llama_cpp_type(name: str, ftype: str, n_layers: int) -> str:
    """The tensor type llama.cpp's quantizer picks for a llama tensor in a file of type `ftype`."""
    if name == "output.weight":
        return "Q8_0" if ftype == "Q8_0" else "Q6_K"
    base = {"Q4_K_M": "Q4_K", "Q4_0": "Q4_0", "Q8_0": "Q8_0"}[ftype]
    kind = name.split(".")[-2]
    if ftype == "Q4_K_M" and kind in ("attn_v", "ffn_down") and _more_bits(int(name.split(".")[1]), n_layers):
        return "Q6_K"
    return base


FILE_TYPES = {"Q4_0": 2, "Q8_0": 7, "Q4_K_M": 15}


def write_random_quantized(path: Path, shape: dict, ftype: str) -> Path:
    """A llama GGUF of `shape` whose matrices are random blocks of llama.cpp's types for `ftype`."""
    import gguf

    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    w = gguf.GGUFWriter(str(tmp), "llama")
    write_header(w, shape, FILE_TYPES[ftype])
    plan = {}
    for name, s in tensor_shapes(shape).items():
        if len(s) == 1:
            plan[name] = (s, None)
            w.add_tensor_info(name, s, np.dtype(np.float32), int(np.prod(s)) * 4)
            continue
        qtype = llama_cpp_type(name, ftype, shape["layers"])
        block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]]
        byte_shape = (s[0], s[1] // block * type_size)
        plan[name] = (byte_shape, qtype)
        w.add_tensor_info(name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)),
                          raw_dtype=gguf.GGMLQuantizationType[qtype])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(0)
    for name, (s, qtype) in plan.items():
        if qtype is None:
            w.write_tensor_data(np.ones(s, dtype=np.float32))
            continue
        _, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]]
        blocks = rng.integers(0, 256, size=(s[0] * s[1] // type_size, type_size), dtype=np.uint8)
        for at in _F16_FIELDS[qtype]:  # float16 2^-14 .. 2^-12: finite activations through every layer
            blocks[:, at + 1] = 0x04 + blocks[:, at + 1] % 8
        w.write_tensor_data(blocks.reshape(s))
    w.close()
    tmp.rename(path)
    return path
