"""A float GGUF (F32, F16, BF16 weights) written again as Q8_0, Q4_K_M or Q4_K_S, as `ollama create --quantize`
and llama.cpp's `llama-quantize` write it, for `/api/create` without an Ollama upstream
(velollm/api/create_quantize.py).

Which tensor gets which type is Ollama's rule (quant_mix.py). The blocks are ggml's reference quantizers bit for
bit: Q4_K, Q5_K and Q6_K from kquants.py, the Q5_0 / Q5_1 row fallbacks from legacy_quants.py, Q8_0 from gguf-py
(ggml's `quantize_row_q8_0_ref`); tests/gguf/test_gguf_requantize.py and test_kquants.py compare the bytes with
llama.cpp's own quantizer's.

Metadata is copied key by key, `general.file_type` becoming the level's (7, 15, 14) and
`general.quantization_version` added. Tensors go in order from the mapped input to the output, quantized in
chunks of rows on a few threads (chunk_pool.py: a bounded number of chunks in flight, across tensor boundaries,
taken back in order; never the whole model, nor a whole tensor as float32, in memory); `on_progress` is called
per chunk.
"""

from __future__ import annotations

import hashlib
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from velollm.engine.loader import kquants, legacy_quants
from velollm.engine.loader.chunk_pool import default_workers, ordered_map
from velollm.engine.loader.gguf_file import FLOAT_TYPES, GGUFFile
from velollm.engine.loader.quant_mix import FILE_TYPES, TensorSpec, is_quantized, tensor_types
from velollm.errors import ModelLoadError, UnsupportedModel

if TYPE_CHECKING:
    from gguf import GGMLQuantizationType, GGUFEndian, GGUFReader, GGUFWriter, ReaderTensor

SOURCE_TYPES = FLOAT_TYPES  # what it quantizes: float tensors
TARGETS = ("Q8_0", "Q4_K_M", "Q4_K_S")  # Ollama's quantize levels
CHUNK_VALUES = 1 << 18  # float32 values at a time: the K-quant search's ~20 arrays of this size stay in cache
_BLOCKS = {"Q4_K": (256, kquants.quantize_q4_k), "Q5_K": (256, kquants.quantize_q5_k),
           "Q6_K": (256, kquants.quantize_q6_k), "Q5_0": (32, legacy_quants.quantize_q5_0),
           "Q5_1": (32, legacy_quants.quantize_q5_1)}  # Q8_0: gguf-py's, ggml's bytes already


class RequantizeError(ValueError):
    """The file cannot be quantized (it is not a readable GGUF, its weights are not float, or the target is not one
    of TARGETS)."""


@dataclass(frozen=True)
class Source:
    """A GGUF opened and checked for quantization (open_source): the one check of what it holds."""

    reader: GGUFReader
    arch: str
    specs: list[TensorSpec]
    kind: str  # the type most of its weights are stored as: Ollama's "quantizing F16 model to ..."


def open_source(path: Path) -> Source:
    """`path` opened for `requantize`; RequantizeError when it is not a readable GGUF (a bad magic, a header cut
    short, a tensor's data past the end of the file: GGUFFile's checks, named without the path) or a weight
    Ollama's rule would quantize is not stored as F32, F16 or BF16. The tensors' own types decide, not
    `general.file_type` (a header may say F16 over quantized blocks)."""
    import gguf

    try:  # GGUFReader answers a broken file with numpy's words (or none), at a tensor read deep in the run
        GGUFFile(path).close()
    except (ModelLoadError, UnsupportedModel) as exc:
        problem = str(exc).replace(f"{path}: ", "").replace(str(path), "the file")
        raise RequantizeError(f"the model's GGUF file is not usable: {problem}") from None
    reader = gguf.GGUFReader(path)
    arch = _arch(reader)
    specs = [TensorSpec(t.name, tuple(int(n) for n in t.shape), t.tensor_type.name) for t in reader.tensors]
    weights = Counter(s.kind for s in specs if is_quantized(s.name, len(s.shape)))
    foreign = sorted(set(weights) - set(SOURCE_TYPES))
    if foreign:
        raise RequantizeError(f"quantization is only supported for F16, BF16 and F32 models, not {', '.join(foreign)} "
                              "(the type its weights are stored as)")
    kinds = weights or Counter(s.kind for s in specs)
    return Source(reader, arch, specs, kinds.most_common(1)[0][0] if kinds else "F32")


def requantize(source: Path | Source, target: Path, quant: str,
               on_progress: Callable[[int, int], None] | None = None, workers: int | None = None) -> Written:
    """`source` (a path, or a file open_source checked) written to `target` with its weights as `quant` (one of
    TARGETS); RequantizeError when the source holds weights that are not F32/F16/BF16. `on_progress(done_bytes,
    total_bytes)` (source bytes) per chunk of rows. The chunks are quantized on `workers` threads (default:
    chunk_pool.default_workers()), the bytes the same whatever their number. Returns the written file's sha256
    and size, hashed as the bytes went out (no second read of a file of gigabytes)."""
    import gguf

    if quant not in TARGETS:
        raise RequantizeError(f"unsupported quantization type {quant}")
    opened = source if isinstance(source, Source) else open_source(source)
    reader, arch, specs = opened.reader, opened.arch, opened.specs
    experts = reader.fields.get(f"{arch}.expert_count")
    kinds = tensor_types(specs, quant, arch, int(experts.contents()) if experts is not None else 0)
    writer = gguf.GGUFWriter(target, arch=arch, endianess=reader.endianess)
    _copy_metadata(reader, writer, quant)
    plan = [(t, None if kind == spec.kind else gguf.GGMLQuantizationType[kind])
            for t, spec, kind in zip(reader.tensors, specs, kinds)]
    for tensor, qtype in plan:
        _add_info(writer, tensor, qtype)
    total, done = sum(int(t.n_bytes) for t in reader.tensors), 0
    sources = [None if qtype is None else _floats(tensor) for tensor, qtype in plan]

    def quantize(chunk: _Chunk) -> np.ndarray | None:
        qtype = plan[chunk.tensor][1]
        return None if qtype is None else _quantize(sources[chunk.tensor][chunk.rows], qtype)

    out = np.empty(0, np.uint8)
    writer.open_output_file()
    file = writer.fout[0] = _HashingFile(writer.fout[0])  # (one file: GGUFWriter splits only when asked)
    # an error from here on (the writer's, on_progress's) stops the threads at once and closes the file too
    with closing(writer):
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        jobs = ordered_map(quantize, _chunks(sources), workers or default_workers())
        with closing(jobs):
            for chunk, block in jobs:
                tensor, qtype = plan[chunk.tensor]
                if qtype is None:
                    file.write_tensor(tensor.data, writer.data_alignment)  # (in the source's byte order: the file's)
                else:
                    if chunk.rows.start == 0:
                        out = _output(tensor, qtype)
                    out[chunk.rows] = block
                    if chunk.last:
                        file.write_tensor(_in_order(out, writer.endianess), writer.data_alignment)
                if on_progress is not None:
                    on_progress(done + int(int(tensor.n_bytes) * chunk.fraction), total)
                if chunk.last:
                    done += int(tensor.n_bytes)
    return Written("sha256:" + file.sha256.hexdigest(), file.size)


@dataclass(frozen=True)
class Written:
    """What requantize wrote: its `sha256:<hex>` (the blob's name in a store) and size, hashed as it was written."""

    digest: str
    size: int


class _HashingFile:
    """The output file, hashed as it is written (the blob's digest without reading the file back): what
    GGUFWriter calls for the header, metadata and tensor infos, and `write_tensor` for the tensors' data, which
    GGUFWriter would write with numpy's tofile, past any wrapper."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | np.ndarray) -> int:
        self.sha256.update(data)
        written = self.file.write(data)
        self.size += memoryview(data).nbytes
        return written

    def write_tensor(self, data: np.ndarray, alignment: int) -> None:
        """As GGUFWriter.write_tensor_data lays it out: padded to `alignment` before and after."""
        raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        self.write(bytes(-self.size % alignment))
        self.write(raw)
        self.write(bytes(-raw.nbytes % alignment))

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _in_order(data: np.ndarray, endianess: GGUFEndian) -> np.ndarray:
    """`data` (this machine's byte order) in the file's: GGUFWriter's byteswap for a big-endian file."""
    import gguf

    native = gguf.GGUFEndian.BIG if sys.byteorder == "big" else gguf.GGUFEndian.LITTLE
    return data if endianess == native else data.byteswap(inplace=False)


@dataclass(frozen=True)
class _Chunk:
    """CHUNK_VALUES' worth of rows of the plan's tensor `tensor` (all of it when it is copied as it is)."""

    tensor: int
    rows: slice
    last: bool
    fraction: float  # of the tensor done once this chunk is


def _chunks(sources: list[np.ndarray | _Bf16Rows | None]) -> Iterator[_Chunk]:
    for index, rows in enumerate(sources):
        if rows is None:
            yield _Chunk(index, slice(0, 0), True, 1.0)
            continue
        count = rows.shape[0]
        step = max(1, CHUNK_VALUES // rows.shape[1])
        for start in range(0, count, step):
            stop = min(start + step, count)
            yield _Chunk(index, slice(start, stop), stop == count, stop / count)


def _copy_metadata(reader: GGUFReader, writer: GGUFWriter, quant: str) -> None:
    """Every key but the writer's own, `general.file_type` the level's, `general.quantization_version` added."""
    import gguf

    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        if field.name in (gguf.Keys.General.FILE_TYPE, gguf.Keys.General.QUANTIZATION_VERSION):
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
    writer.add_file_type(FILE_TYPES[quant])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_info(writer: GGUFWriter, tensor: ReaderTensor, qtype: GGMLQuantizationType | None) -> None:
    import gguf

    if qtype is None:  # copied as it is
        writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes,
                               tensor.tensor_type)
    elif qtype == gguf.GGMLQuantizationType.F16:  # a row no block fits
        shape = _numpy_shape(tensor)
        writer.add_tensor_info(tensor.name, shape, np.dtype(np.float16), 2 * int(np.prod(shape)))
    else:
        byte_shape = gguf.quant_shape_to_byte_shape(_numpy_shape(tensor), qtype)
        writer.add_tensor_info(tensor.name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), qtype)


def _output(tensor: ReaderTensor, qtype: GGMLQuantizationType) -> np.ndarray:
    """The tensor's quantized rows, to be filled chunk by chunk: `(rows, bytes per row)` (F16: halves)."""
    import gguf

    dtype = np.float16 if qtype == gguf.GGMLQuantizationType.F16 else np.uint8
    shape = _output_shape(tensor, qtype)
    return np.empty(shape, dtype).reshape(-1, shape[-1])


def _output_shape(tensor: ReaderTensor, qtype: GGMLQuantizationType) -> tuple[int, ...]:
    import gguf

    if qtype == gguf.GGMLQuantizationType.F16:
        return _numpy_shape(tensor)
    return gguf.quant_shape_to_byte_shape(_numpy_shape(tensor), qtype)


def _quantize(rows: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    """float32 `(rows, ne0)` as `qtype`'s bytes (F16: halves)."""
    import gguf

    rows = np.asarray(rows, dtype=np.float32)  # (a plain array: numpy.memmap views cost a Python call an operation)
    if qtype == gguf.GGMLQuantizationType.F16:
        return rows.astype(np.float16)
    if qtype.name not in _BLOCKS:
        return gguf.quants.quantize(rows, qtype)
    size, blocks = _BLOCKS[qtype.name]
    return blocks(np.ascontiguousarray(rows).reshape(-1, size)).reshape(rows.shape[0], -1)


def _numpy_shape(tensor: ReaderTensor) -> tuple[int, ...]:
    """GGUF lists dimensions innermost first (ne0 = a row's length); numpy, outermost first."""
    return tuple(int(n) for n in reversed(tensor.shape))


def _floats(tensor: ReaderTensor) -> np.ndarray | _Bf16Rows:
    """The tensor's rows `(rows, ne0)`, as stored (F32/F16/BF16 widened chunk by chunk by `_quantize`)."""
    import gguf

    data = np.asarray(tensor.data)
    if tensor.tensor_type == gguf.GGMLQuantizationType.BF16:
        return _Bf16Rows(data.reshape(-1, int(tensor.shape[0]) * 2))
    return data.reshape(-1, int(tensor.shape[0]))


class _Bf16Rows:
    """BF16 rows (stored as bytes) read as float32 a slice at a time."""

    def __init__(self, raw: np.ndarray) -> None:
        self.raw = raw
        self.shape = (raw.shape[0], raw.shape[1] // 2)

    def __getitem__(self, rows: slice) -> np.ndarray:
        import gguf

        return gguf.quants.dequantize(np.ascontiguousarray(self.raw[rows]), gguf.GGMLQuantizationType.BF16)


def _arch(reader: GGUFReader) -> str:
    import gguf

    field = reader.fields.get(gguf.Keys.General.ARCHITECTURE)
    if field is None:
        raise RequantizeError("not a model file: it has no general.architecture")
    return str(field.contents())
