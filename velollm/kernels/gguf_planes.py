"""GGUF quantized matrices kept in their blocks, split into the aligned planes the quantized kernels read.

A GGUF matrix [N, K] is N rows of K / QK blocks, each block a fixed byte record (ggml-quants.c). The
kernels would rather read each field as its own row-major array than walk 18-, 84- or 210-byte records
(odd strides, float16 fields at odd offsets), so `split_planes` cuts every block at fixed byte offsets
into up to four planes, each a [N, blocks * width] tensor:
  qs  the low bits of the quants (8, 4 or 2 bits per element; Q6_K's low nibbles)
  qh  the high bits (Q5_0, Q5_1, Q3_K's hmask, Q5_K, Q6_K)
  sc  the sub-block scales (and mins) of the K-quants, still packed as in the file
  d   the float16 block scale, or (scale, min) interleaved
Bytes are moved, never decoded: `join_blocks` gives the file's blocks back, the resident size is the
file's tensor bytes, and the bit-exact torch dequantizers (gguf_dequant) are the kernels' reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from velollm.kernels import gguf_dequant


@dataclass(frozen=True)
class QuantType:
    """One GGML block type: its kernel code, block size and plane layout."""

    name: str
    code: int  # the kernels' QTYPE constexpr
    block: int  # elements per block
    planes: tuple[tuple[str, int, int, torch.dtype], ...]  # (plane, byte offset in the block, bytes, dtype)

    @property
    def type_size(self) -> int:
        return sum(width for _, _, width, _ in self.planes)

    @property
    def qs_bytes(self) -> int:
        """Bytes of the qs plane per block."""
        return next(width for name, _, width, _ in self.planes if name == "qs")

    @property
    def shifts(self) -> int:
        """How many elements each qs byte holds (8 / bits of the qs field)."""
        return self.block // self.qs_bytes

    @property
    def group(self) -> int:
        """Aligned qs bytes whose fields at one shift step share a scale (and min): 32 for Q8_0, Q4_K
        and Q5_K, 16 for the others (16-element sub-blocks, or 32-element blocks of 16 bytes)."""
        return 32 if self.name in ("Q8_0", "Q4_K", "Q5_K") else 16


_U8, _I8, _F16 = torch.uint8, torch.int8, torch.float16
QUANT_TYPES: dict[str, QuantType] = {q.name: q for q in (
    QuantType("Q8_0", 0, 32, (("d", 0, 2, _F16), ("qs", 2, 32, _I8))),
    QuantType("Q4_0", 1, 32, (("d", 0, 2, _F16), ("qs", 2, 16, _U8))),
    QuantType("Q4_1", 2, 32, (("d", 0, 4, _F16), ("qs", 4, 16, _U8))),
    QuantType("Q5_0", 3, 32, (("d", 0, 2, _F16), ("qh", 2, 4, _U8), ("qs", 6, 16, _U8))),
    QuantType("Q5_1", 4, 32, (("d", 0, 4, _F16), ("qh", 4, 4, _U8), ("qs", 8, 16, _U8))),
    QuantType("Q2_K", 5, 256, (("sc", 0, 16, _U8), ("qs", 16, 64, _U8), ("d", 80, 4, _F16))),
    QuantType("Q3_K", 6, 256, (("qh", 0, 32, _U8), ("qs", 32, 64, _U8), ("sc", 96, 12, _U8), ("d", 108, 2, _F16))),
    QuantType("Q4_K", 7, 256, (("d", 0, 4, _F16), ("sc", 4, 12, _U8), ("qs", 16, 128, _U8))),
    QuantType("Q5_K", 8, 256, (("d", 0, 4, _F16), ("sc", 4, 12, _U8), ("qh", 16, 32, _U8), ("qs", 48, 128, _U8))),
    QuantType("Q6_K", 9, 256, (("qs", 0, 128, _U8), ("qh", 128, 64, _U8), ("sc", 192, 16, _I8), ("d", 208, 2, _F16))),
)}


@dataclass(frozen=True)
class QuantizedWeight:
    """A GGUF matrix of shape (out_features, in_features) held as planes (see the module docstring)."""

    qtype: str
    shape: tuple[int, int]
    planes: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        spec = QUANT_TYPES[self.qtype]
        rows, cols = self.shape
        if cols % spec.block:
            raise ValueError(f"{self.qtype}: {cols} columns are not whole blocks of {spec.block}")
        for name, _, width, dtype in spec.planes:
            plane = self.planes[name]
            want = (rows, cols // spec.block * width // dtype.itemsize)
            if tuple(plane.shape) != want or plane.dtype != dtype or not plane.is_contiguous():
                raise ValueError(f"{self.qtype} plane {name!r} must be a contiguous {dtype} tensor of shape {want}")

    @property
    def spec(self) -> QuantType:
        return QUANT_TYPES[self.qtype]

    @property
    def device(self) -> torch.device:
        return self.planes["qs"].device

    def numel(self) -> int:
        """Elements of the matrix it encodes."""
        return self.shape[0] * self.shape[1]

    @property
    def nbytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.planes.values())

    def to(self, device: torch.device | str) -> QuantizedWeight:
        return QuantizedWeight(self.qtype, self.shape, {k: v.to(device) for k, v in self.planes.items()})

    def rows(self, index: torch.Tensor) -> QuantizedWeight:
        """The rows `index` (e.g. a permutation, or the tokens of an embedding lookup)."""
        planes = {k: v.index_select(0, index.to(v.device)) for k, v in self.planes.items()}
        return QuantizedWeight(self.qtype, (int(index.numel()), self.shape[1]), planes)


def split_planes(blocks: torch.Tensor, qtype: str, shape: tuple[int, int]) -> QuantizedWeight:
    """The file's blocks of a [rows, cols] matrix (uint8, any shape holding rows * cols / QK whole
    blocks, on any device) cut into planes on the same device."""
    spec = QUANT_TYPES[qtype]
    rows, cols = shape
    b = blocks.reshape(rows, cols // spec.block, spec.type_size)
    planes = {name: b[:, :, at:at + width].reshape(rows, -1).contiguous().view(dtype)
              for name, at, width, dtype in spec.planes}
    return QuantizedWeight(qtype, (rows, cols), planes)


def join_blocks(w: QuantizedWeight) -> torch.Tensor:
    """The file's blocks back: uint8 [rows, cols / QK * type_size]."""
    spec = w.spec
    rows, _cols = w.shape
    parts = [w.planes[name].view(torch.uint8).reshape(rows, -1, width) for name, _, width, _ in spec.planes]
    return torch.cat(parts, dim=2).reshape(rows, -1)


def cat_rows(weights: list[QuantizedWeight]) -> QuantizedWeight:
    """Weights of one type and width stacked along the output rows (fused q/k/v, gate/up)."""
    first = weights[0]
    if any(w.qtype != first.qtype or w.shape[1] != first.shape[1] for w in weights):
        raise ValueError("only weights of one type and input width can be stacked")
    planes = {k: torch.cat([w.planes[k] for w in weights]) for k in first.planes}
    return QuantizedWeight(first.qtype, (sum(w.shape[0] for w in weights), first.shape[1]), planes)


def dequantize_weight(w: QuantizedWeight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The weight as a dense [rows, cols] tensor, bit-exact (gguf.quants' values), computed on the CPU
    and returned on w's device: the reference of the kernels, never the GPU path."""
    blocks = join_blocks(w).cpu()
    return gguf_dequant.dequantize(blocks, w.qtype, w.shape, dtype).to(w.device)


def quantized_matmul_ref(x: torch.Tensor, w: QuantizedWeight) -> torch.Tensor:
    """x [..., K] @ W^T in float32 with the bit-exact dequantized W, returned in x's dtype: the reference
    of quant_gemv / quant_gemm, and the CPU path of a quantized layer."""
    return (x.float() @ dequantize_weight(w).T).to(x.dtype)
