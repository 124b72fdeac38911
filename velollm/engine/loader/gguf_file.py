"""GGUFFile: the header of a GGUF file (metadata and tensor table) over a read-only memory map.

Parsed here rather than with `gguf.GGUFReader` so that a truncated file, a bad magic or an unknown
tensor type become typed errors naming the file before any tensor is touched, and so that large
vocabularies (128k tokens, 280k merges) parse in a fraction of a second.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from velollm.errors import ModelLoadError, UnsupportedModel

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
FLOAT_TYPES = ("F32", "F16", "BF16")  # the tensor types stored as floats (the rest are quantized blocks)

# GGUF metadata value types -> (struct format, numpy dtype) for the fixed-size ones.
_SCALARS: dict[int, tuple[str, str]] = {
    0: ("<B", "<u1"), 1: ("<b", "<i1"), 2: ("<H", "<u2"), 3: ("<h", "<i2"), 4: ("<I", "<u4"),
    5: ("<i", "<i4"), 6: ("<f", "<f4"), 7: ("<?", "|b1"), 10: ("<Q", "<u8"), 11: ("<q", "<i8"),
    12: ("<d", "<f8"),
}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor table. `shape` is in torch order (GGUF stores ne0 first)."""

    name: str
    shape: tuple[int, ...]
    type_id: int
    offset: int  # absolute file offset of the data
    nbytes: int

    @property
    def num_elements(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def type_name(self) -> str:
        import gguf

        try:
            return gguf.GGMLQuantizationType(self.type_id).name
        except ValueError:
            return f"type {self.type_id}"


class _Cursor:
    def __init__(self, buf: mmap.mmap | bytes, path: Path, max_array_size: int = -1) -> None:
        self.buf, self.pos, self.path, self.max_array_size = buf, 0, path, max_array_size

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise ModelLoadError(f"{self.path}: truncated GGUF header (needs {self.pos + n} bytes, file has {len(self.buf)})")
        view = memoryview(self.buf)[self.pos:self.pos + n]
        self.pos += n
        return view

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        raw = self.take(self.scalar("<Q"))
        return bytes(raw).decode("utf-8", errors="replace")

    def strings(self, count: int) -> list[str]:
        """`count` strings in one tight loop: vocabularies hold 100k+ tokens and merges."""
        buf, pos, size, out = self.buf, self.pos, len(self.buf), []
        unpack, append = _U64.unpack_from, out.append
        for _ in range(count):
            if pos + 8 > size:
                break
            end = pos + 8 + unpack(buf, pos)[0]
            if end > size:
                break
            append(buf[pos + 8:end].decode("utf-8", errors="replace"))
            pos = end
        self.pos = pos
        if len(out) < count:
            self.take(size + 1)  # raises the truncation error
        return out

    def skip(self, item_type: int, count: int) -> None:
        """Past `count` array items unread: fixed-size ones at once, strings by their lengths alone."""
        if item_type in _SCALARS:
            self.take(count * struct.calcsize(_SCALARS[item_type][0]))
        elif item_type == _STRING:
            buf, pos, size, unpack = self.buf, self.pos, len(self.buf), _U64.unpack_from
            for _ in range(count):
                if pos + 8 > size:
                    self.take(size + 1)  # raises the truncation error
                pos += 8 + unpack(buf, pos)[0]
            self.pos = pos
            self.take(0)  # raises if the last string ran past the end
        else:
            for _ in range(count):
                self.value(item_type)

    def value(self, type_id: int) -> Any:
        if type_id in _SCALARS:
            return self.scalar(_SCALARS[type_id][0])
        if type_id == _STRING:
            return self.string()
        if type_id == _ARRAY:
            item_type, count = self.scalar("<I"), self.scalar("<Q")
            if 0 <= self.max_array_size < count:
                self.skip(item_type, count)
                return None
            if item_type in _SCALARS:
                dtype = np.dtype(_SCALARS[item_type][1])
                return np.frombuffer(self.take(count * dtype.itemsize), dtype=dtype).copy()
            if item_type == _STRING:
                return self.strings(count)
            return [self.value(item_type) for _ in range(count)]
        raise ModelLoadError(f"{self.path}: unknown GGUF metadata value type {type_id} at byte {self.pos}")


@dataclass(frozen=True)
class TensorTable:
    """A parsed file's tensor table and the file's state then: what a load needs to map the file again for its
    tensors without parsing its header a second time (`GGUFFile(path, table)`)."""

    tensors: dict[str, TensorInfo]
    version: int
    file_size: int
    modified_ns: int


class GGUFFile:
    """Metadata dict + tensor table of a GGUF file; tensor bytes are read lazily from the map.

    With `table` (an earlier parse's `table`), the header is not parsed again (a 128k-token vocabulary takes
    0.2-0.3 s): the file is mapped, without metadata; ModelLoadError when it changed since that parse.
    With `max_array_size` 0 or more, a metadata array of more items is read past and its value is None (Ollama's
    ggml.Decode maxArraySize: /api/show without `verbose` wants no vocabulary)."""

    def __init__(self, path: str | Path, table: TensorTable | None = None, *, max_array_size: int = -1) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, 2)
                if size < 24:
                    raise ModelLoadError(f"{self.path}: not a GGUF file ({size} bytes)")
                self.modified_ns = os.fstat(f.fileno()).st_mtime_ns
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise ModelLoadError(f"cannot open {self.path}: {e}") from e
        self.file_size = size
        if table is not None:
            self._take(table)
            return
        cur = _Cursor(self._map, self.path, max_array_size)
        magic = bytes(cur.take(4))
        if magic != GGUF_MAGIC:
            raise ModelLoadError(f"{self.path}: bad magic, not a GGUF file")  # never echo a file's bytes
        self.version = cur.scalar("<I")
        if self.version not in (2, 3):
            raise UnsupportedModel(f"{self.path}: GGUF version {self.version} is not supported (2, 3 are)")
        n_tensors, n_kv = cur.scalar("<Q"), cur.scalar("<Q")
        self.metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string()
            self.metadata[key] = cur.value(cur.scalar("<I"))
        raw = []
        for _ in range(n_tensors):
            name = cur.string()
            dims = [cur.scalar("<Q") for _ in range(cur.scalar("<I"))]
            raw.append((name, tuple(reversed(dims)), cur.scalar("<I"), cur.scalar("<Q")))
        align = int(self.metadata.get("general.alignment", DEFAULT_ALIGNMENT))
        data_start = -(-cur.pos // align) * align
        self.tensors: dict[str, TensorInfo] = {}
        for name, shape, type_id, rel in raw:
            info = TensorInfo(name, shape, type_id, data_start + rel, _nbytes(self.path, name, shape, type_id))
            if info.offset + info.nbytes > size:
                raise ModelLoadError(f"{self.path}: truncated GGUF file, tensor {name!r} ends at byte "
                                     f"{info.offset + info.nbytes} but the file has {size}")
            self.tensors[name] = info

    def _take(self, table: TensorTable) -> None:
        if (table.file_size, table.modified_ns) != (self.file_size, self.modified_ns):
            self.close()
            raise ModelLoadError(f"{self.path} changed since it was read (its size or modification time); "
                                 "load the model again")
        self.version, self.metadata, self.tensors = table.version, {}, dict(table.tensors)

    @property
    def table(self) -> TensorTable:
        return TensorTable(dict(self.tensors), self.version, self.file_size, self.modified_ns)

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def raw(self, info: TensorInfo) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view of the map (no copy)."""
        return np.frombuffer(self._map, dtype=np.uint8, count=info.nbytes, offset=info.offset)

    def close(self) -> None:
        try:
            self._map.close()
        except BufferError:
            pass  # a tensor view still references the map; it is released with that view

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _nbytes(path: Path, name: str, shape: tuple[int, ...], type_id: int) -> int:
    import gguf

    try:
        qtype = gguf.GGMLQuantizationType(type_id)
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        raise UnsupportedModel(f"{path}: tensor {name!r} has unknown GGML tensor type {type_id}") from None
    n = int(np.prod(shape)) if shape else 1
    if shape and shape[-1] % block:
        raise ModelLoadError(f"{path}: tensor {name!r} row of {shape[-1]} is not a multiple of the "
                             f"{qtype.name} block size {block}")
    return n // block * type_size
