"""The jobs of a GGUF load (run by weight_jobs.py): what computes each tensor as gguf.iter_weights yields it.

A 4-bit matrix repacked to int4 (CPU), a quantized one's blocks copied to the device as planes, any other tensor
dequantized into the compute dtype (a large matrix by pieces of rows, so that the workers share it).
llama.cpp's converter permutes the Q/K rows of `llama` models for its interleaved rope; the permutation is undone
here so every tensor equals what Hugging Face's LlamaForCausalLM holds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from velollm.config import ModelConfig
from velollm.engine.loader.gguf_file import FLOAT_TYPES, GGUFFile, TensorInfo
from velollm.engine.loader.gguf_quantized import int4_tensor, map_bytes, quantized_tensor, stays_int4, stays_quantized
from velollm.engine.loader.weight_jobs import PIECE_ELEMENTS, WeightJob
from velollm.kernels import gguf_dequant
from velollm.kernels.gguf_planes import QuantizedWeight
from velollm.kernels.int4_cpu import Int4Weight

FLOAT_VIEWS = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}  # the bytes as they are


def weight_jobs(f: GGUFFile, info: TensorInfo, name: str, config: ModelConfig, target: torch.dtype,
                quantized_device: str | None, int4: bool) -> list[WeightJob]:
    """The jobs computing the tensor `info` (Hugging Face name `name`) as iter_weights yields it."""
    heads = _permuted_heads(info.name, config) if config.model_type == "llama" else None
    rows = unpermute_qk(torch.arange(info.shape[0]), heads) if heads else None
    if int4 and stays_int4(info):
        return [WeightJob(functools.partial(int4_tensor, map_bytes(f, info), info, rows),
                          functools.partial(_named, name))]
    if quantized_device and stays_quantized(info):
        return [WeightJob(functools.partial(_planes, f, info, quantized_device, rows), functools.partial(_named, name))]
    finish = functools.partial(_unpermuted, name, heads)
    if (info.type_name in gguf_dequant.SUPPORTED_TYPES and len(info.shape) == 2
            and info.num_elements > PIECE_ELEMENTS):
        return _row_pieces(f, info, target, finish)
    raw = map_bytes(f, info)  # here, not on a worker (map_bytes)
    # float tensors are views of the map and must be copied out; dequantized ones are fresh
    return [WeightJob(lambda: dequantize_bytes(raw, info, target).to(target, copy=info.type_name in FLOAT_TYPES),
                      finish)]


def dequantize_bytes(raw: torch.Tensor, info: TensorInfo, dtype: torch.dtype) -> torch.Tensor:
    """float32 (or the file's float type) tensor of `info` from its bytes (map_bytes), in torch (rows, cols) order;
    the types with a torch dequantizer come out in `dtype` directly (no float32 copy of the whole tensor). No
    warnings filter touched, so a load's worker may run it."""
    kind = info.type_name
    if kind in FLOAT_VIEWS:
        t = raw.view(FLOAT_VIEWS[kind])
    elif kind in gguf_dequant.SUPPORTED_TYPES:
        t = gguf_dequant.dequantize(raw, kind, info.shape, dtype)
    else:
        import gguf

        data = raw.numpy()
        rows = data.reshape(-1, data.size // max(1, info.num_elements // info.shape[-1]))
        t = torch.from_numpy(gguf.quants.dequantize(rows, gguf.GGMLQuantizationType[kind]))
    return t.reshape(info.shape)


def unpermute_qk(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo convert_hf_to_gguf.py's `permute` (rows [h, 2, d/2] -> [h, d/2, 2]) for Q/K weights/biases."""
    rest = t.shape[1:]
    return t.reshape(num_heads, t.shape[0] // num_heads // 2, 2, *rest).transpose(1, 2).reshape(t.shape)


def _row_pieces(f: GGUFFile, info: TensorInfo, target: torch.dtype,
                finish: Callable[[torch.Tensor], tuple[str, torch.Tensor]]) -> list[WeightJob]:
    """A large quantized matrix dequantized by pieces of rows into one tensor, finished with the last piece."""
    num_rows, cols = info.shape
    block_elems, type_size = gguf_dequant.block_size(info.type_name)
    row_bytes = cols // block_elems * type_size
    raw = map_bytes(f, info)  # here, not on a worker (map_bytes)
    out = torch.empty(info.shape, dtype=target)
    step = max(1, PIECE_ELEMENTS // cols)
    jobs = [WeightJob(functools.partial(gguf_dequant.dequantize, raw[r * row_bytes:min(r + step, num_rows) * row_bytes],
                                        info.type_name, (min(r + step, num_rows) - r, cols), target,
                                        out[r:r + step]))
            for r in range(0, num_rows, step)]
    jobs[-1] = WeightJob(jobs[-1].run, lambda _: finish(out))
    return jobs


def _named(name: str, weight: QuantizedWeight | Int4Weight) -> tuple[str, QuantizedWeight | Int4Weight]:
    return name, weight


def _unpermuted(name: str, heads: int | None, tensor: torch.Tensor) -> tuple[str, torch.Tensor]:
    return name, unpermute_qk(tensor, heads) if heads else tensor


def _planes(f: GGUFFile, info: TensorInfo, device: str, rows: torch.Tensor | None) -> QuantizedWeight:
    weight = quantized_tensor(f, info, device)
    return weight if rows is None else weight.rows(rows)


def _permuted_heads(name: str, config: ModelConfig) -> int | None:
    """The head count llama.cpp's converter permuted the rows of this Q/K tensor by, else None."""
    kind = name.split(".")[-2]
    if kind == "attn_q":
        return config.num_attention_heads
    return config.num_key_value_heads if kind == "attn_k" else None
