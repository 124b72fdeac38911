"""A float GGUF (F32, F16, BF16 weights) written again as Q8_0, as `ollama create --quantize q8_0` and llama.cpp's
`llama-quantize ... Q8_0` write it, for `/api/create` without an Ollama upstream (velollm/api/local_create.py).

Which tensors: Ollama's and llama.cpp's rule, the Q8_0 part of it. A tensor named `*weight` with two or more
dimensions is quantized, except norms, MoE routers (`ffn_gate_inp`), position and token-type embeddings and
`ssm_conv1d`; the token embedding and `output.weight` are quantized too (Q8_0 is the one file type whose
output layer stays at the file type, not Q6_K). A row whose length is not a multiple of Q8_0's 32 values is
written as F16, llama.cpp's fallback. The rest is copied as it is. The blocks are gguf-py's Q8_0 (scale
max|x|/127 as F16, values rounded half away from zero), bit for bit llama.cpp's `quantize_row_q8_0_ref`
(tests/gguf/test_gguf_requantize.py compares the tensors with llama.cpp's own quantizer's).

Metadata is copied key by key, `general.file_type` becoming MOSTLY_Q8_0 and `general.quantization_version`
added. Tensors go one at a time from the mapped input to the output (never the whole model in memory).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from gguf import GGMLQuantizationType, GGUFReader, ReaderTensor

from velollm.engine.loader.gguf_file import FLOAT_TYPES as SOURCE_TYPES  # what it quantizes: float tensors

TARGETS = ("Q8_0",)  # what gguf-py quantizes bit for bit as llama.cpp does, with llama.cpp's tensor choice
_KEPT = ("_norm.weight", "ffn_gate_inp.weight", "position_embd", "token_types", "ssm_conv1d")


class RequantizeError(ValueError):
    """The file cannot be quantized (its weights are not float, or the target is not one of TARGETS)."""


def requantize(source: Path, target: Path, quant: str,
               on_progress: Callable[[int, int], None] | None = None) -> None:
    """`source` written to `target` with its weights as `quant` (one of TARGETS); RequantizeError when the
    source holds weights that are not F32/F16/BF16. `on_progress(done_bytes, total_bytes)` per tensor."""
    import gguf

    if quant not in TARGETS:
        raise RequantizeError(f"unsupported quantization type {quant}")
    qtype = gguf.GGMLQuantizationType[quant]
    reader = gguf.GGUFReader(source)
    weights = [t for t in reader.tensors if _quantized(t.name, len(t.shape))]
    foreign = sorted({t.tensor_type.name for t in weights} - set(SOURCE_TYPES))
    if foreign:
        raise RequantizeError(f"quantization is only supported for F32, F16 and BF16 models; this one holds "
                              f"{', '.join(foreign)} weights")
    writer = gguf.GGUFWriter(target, arch=_arch(reader), endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        if field.name in (gguf.Keys.General.FILE_TYPE, gguf.Keys.General.QUANTIZATION_VERSION):
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
    writer.add_file_type(gguf.LlamaFileType[f"MOSTLY_{quant}"])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    plan = []
    for tensor in reader.tensors:
        kind = _target(tensor, qtype) if tensor in weights else None
        shape = _numpy_shape(tensor)
        if kind is None:
            writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes,
                                   tensor.tensor_type)
        elif kind == gguf.GGMLQuantizationType.F16:  # a row Q8_0 cannot hold
            writer.add_tensor_info(tensor.name, shape, np.dtype(np.float16), 2 * int(np.prod(shape)))
        else:
            byte_shape = gguf.quant_shape_to_byte_shape(shape, kind)
            writer.add_tensor_info(tensor.name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), kind)
        plan.append((tensor, kind))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    total, done = sum(int(t.n_bytes) for t in reader.tensors), 0
    for tensor, kind in plan:
        if kind is None:
            writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
        elif kind == gguf.GGMLQuantizationType.F16:
            writer.write_tensor_data(_floats(tensor).astype(np.float16))
        else:
            writer.write_tensor_data(gguf.quants.quantize(_floats(tensor), kind))
        done += int(tensor.n_bytes)
        if on_progress is not None:
            on_progress(done, total)
    writer.close()


def _quantized(name: str, num_dims: int) -> bool:
    return name.endswith("weight") and num_dims >= 2 and not any(part in name for part in _KEPT)


def _target(tensor: ReaderTensor, qtype: GGMLQuantizationType) -> GGMLQuantizationType | None:
    import gguf

    block_size, _ = gguf.GGML_QUANT_SIZES[qtype]
    if int(tensor.shape[0]) % block_size:
        return gguf.GGMLQuantizationType.F16 if tensor.tensor_type != gguf.GGMLQuantizationType.F16 else None
    return qtype


def _numpy_shape(tensor: ReaderTensor) -> tuple[int, ...]:
    """GGUF lists dimensions innermost first (ne0 = a row's length); numpy, outermost first."""
    return tuple(int(n) for n in reversed(tensor.shape))


def _floats(tensor: ReaderTensor) -> np.ndarray:
    """The tensor's values as float32, in its numpy shape (rows of ne0 values)."""
    import gguf

    shape = _numpy_shape(tensor)
    if tensor.tensor_type == gguf.GGMLQuantizationType.BF16:
        return gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(shape)
    return np.asarray(tensor.data, dtype=np.float32).reshape(shape)


def _arch(reader: GGUFReader) -> str:
    import gguf

    field = reader.fields.get(gguf.Keys.General.ARCHITECTURE)
    if field is None:
        raise RequantizeError("not a model file: it has no general.architecture")
    return str(field.contents())
