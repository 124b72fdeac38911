"""4-bit GGUF matrices on the CPU: repacked once into torch's CPU int4 layout, multiplied by its kernel.

torch's `_weight_int4pack_mm_for_cpu(x_bf16 [M, K], packed, 32, scales_and_zeros [K/32, N, 2])` computes
x @ W^T with W[n, k] = (q[n, k] - 8) * scale[k // 32, n] + zero[k // 32, n], q in 0..15: every 4-bit GGUF
type whose groups of 32 share one scale and one offset maps onto it exactly, but for the rounding of
scale and zero to bfloat16:
  Q4_0  (q - 8) * d                        scale = d,        zero = 0
  Q4_1  q * d + m                          scale = d,        zero = m + 8 d
  Q4_K  q * (d sc) - dmin m  per 32 elems  scale = d sc,     zero = 8 d sc - dmin m
Decode on a CPU is bound by the bytes of weights read; these are 0.625 bytes per weight against 2 for
bfloat16 (benchmarks/cpu_quantized.py). Q5_*, Q6_K, Q8_0 and the K-quants with 16-element groups do not
fit 4 bits with one scale per 32 and stay dequantized at load, as do matrices whose output rows are
not a multiple of 16 (the kernel's tile).

Prefill: the kernel dequantizes every weight again for each block of 4 rows of x, so at many rows it
runs well below a dense GEMM. From prefill_rows(dtype) rows on, `int4_linear` dequantizes the matrix once
into a per-model scratch buffer (velollm.kernels.int4_unpack: the kernel's own weights, rounded to
bfloat16 in a bfloat16 model, exact in a float32 one) and runs the GEMM of the model's dtype.

A float32 model (the default on CPUs without bfloat16 in hardware) runs the same kernel: its activations are
rounded to bfloat16 on the way in and the result cast back, which costs two passes over x, nothing next to
reading 4-bit weights instead of float32 ones at decode (benchmarks/cpu_quantized.py --dtype float32).

Error: scale and zero each carry a relative error <= 2^-8 (bfloat16 rounding) and the activations,
cast to bfloat16, another 2^-8; so per output |y - y_ref| <= (2 * 2^-8 + 2^-16) * sum_k |x_k| (|q - 8|
|scale| + |zero|) + 2^-8 |y| (the bfloat16 result), plus float32 accumulation (`error_bound`, which
the tests hold the kernel to). The bfloat16 prefill path rounds each weight to bfloat16 once more: 3 * 2^-8;
the float32 one keeps x and the weights unrounded, within the kernel's bound.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from velollm.kernels import gguf_dequant, int4_unpack
from velollm.kernels.int4_unpack import Int4Scratch

INT4_TYPES = frozenset({"Q4_0", "Q4_1", "Q4_K"})
GROUP = 32  # elements sharing one scale and zero
ROW_TILE = 16  # output rows must be a multiple of this (the kernel's tile)
# Rows the packer interleaves together (64 with AVX-512, 32 with AVX2): packed matrices stack along N
# only where every matrix but the last fills whole blocks of this; 64 covers both.
PACK_ROWS = 64
# Rows of x from which dequantize + bfloat16 GEMM beats the int4 kernel. benchmarks/int4_prefill.py on 2
# shared EPYC (Zen 4) cores, load 4.5-5.5, medians in ms, int4 kernel / dequantize + GEMM / bfloat16 GEMM:
#   4096x4096    96 rows 19.4 / 31.4 / 8.6    128 rows 26.1 / 43.1 / 11.1    192 rows 77.6 / 73.2 / 33.6
#   14336x4096   96 rows 139 / 159 / 61       128 rows 183 / 165 / 80        256 rows 522 / 391 / 209
# The dequantization is a fixed cost (23-30 ms, 75-125 ms) against the kernel's per-row cost, so the
# crossover is in rows, about the same for every shape: 128-192 and 96-128 here; 128 for both.
PREFILL_ROWS = 128
# The same switch in a float32 model (the GEMM and the scratch are float32; the dtype of CPUs without bfloat16 in
# hardware). benchmarks/int4_prefill.py --dtype float32 on 2 shared EPYC (AVX2) cores, load 0.5-4.5, medians in ms,
# int4 kernel / dequantize + float32 GEMM / float32 GEMM (benchmarks/data/int4_prefill_avx2_float32.jsonl):
#   4096x4096    128 rows 285 / 378 / 224    192 rows 301 / 286 / 228    256 rows 362 / 246 / 218
#   14336x4096   128 rows 757 / 898 / 613    192 rows 1128 / 1067 / 742  256 rows 1825 / 1562 / 915
# The float32 dequantization writes twice the bytes (53-152 ms and 204-424 ms on one thread), so the switch is later.
PREFILL_ROWS_FLOAT32 = 192
_BF16_U = 2.0 ** -8  # unit roundoff of bfloat16


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether this torch has the CPU int4 kernels (and they run on this CPU)."""
    try:
        q = torch.zeros(ROW_TILE, GROUP, dtype=torch.int32)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
        sz = torch.zeros(1, ROW_TILE, 2, dtype=torch.bfloat16)
        torch.ops.aten._weight_int4pack_mm_for_cpu(torch.zeros(1, GROUP, dtype=torch.bfloat16), packed, GROUP, sz)
    except (AttributeError, RuntimeError):
        return False
    return True


@dataclass(frozen=True)
class Int4Weight:
    """A [N, K] matrix in torch's CPU int4 layout: packed uint8 [N, K/2], scales_and_zeros [K/32, N, 2]."""

    shape: tuple[int, int]
    packed: torch.Tensor
    scales_and_zeros: torch.Tensor

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.packed, self.scales_and_zeros))

    @property
    def device(self) -> torch.device:
        return self.packed.device

    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    def to(self, device: torch.device | str) -> Int4Weight:
        if torch.device(device).type != "cpu":
            raise ValueError("Int4Weight is the CPU layout")
        return self


def fits(qtype: str, shape: tuple[int, ...]) -> bool:
    """Whether a GGUF matrix of this type and shape runs as Int4Weight."""
    return qtype in INT4_TYPES and len(shape) == 2 and shape[0] % ROW_TILE == 0 and shape[1] % GROUP == 0


def _f16(b: torch.Tensor, at: int) -> torch.Tensor:
    return gguf_dequant._f16(b, at).squeeze(1)


def _affine(blocks: torch.Tensor, qtype: str) -> tuple[torch.Tensor, torch.Tensor]:
    """blocks uint8 [n, type_size] -> (scale, zero) float32 [n, groups]."""
    if qtype == "Q4_K":
        sc, mn = gguf_dequant._scale_min_k4(blocks[:, 4:16])
        scale = _f16(blocks, 0).unsqueeze(1) * sc.float()
        return scale, 8 * scale - _f16(blocks, 2).unsqueeze(1) * mn.float()
    scale = _f16(blocks, 0).unsqueeze(1)
    return scale, torch.zeros_like(scale) if qtype == "Q4_0" else _f16(blocks, 2).unsqueeze(1) + 8 * scale


def _packed_quants(blocks: torch.Tensor, qtype: str) -> torch.Tensor:
    """blocks uint8 [n, type_size] -> their quant bytes [n, groups, width] (a view): each group's `width` bytes hold
    its first `width` elements in their low nibbles, the next `width` in their high ones."""
    if qtype == "Q4_K":
        return blocks[:, 16:].view(len(blocks), 4, 32)
    return blocks[:, 2 if qtype == "Q4_0" else 4:].view(len(blocks), 1, 16)


def _quants_and_affine(blocks: torch.Tensor, qtype: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """blocks uint8 [n, type_size] -> (q uint8 [n, block] in element order, scale, zero float32 [n, groups])."""
    qs = _packed_quants(blocks, qtype)
    return gguf_dequant._nibbles(qs, qs.shape[1], qs.shape[2]).reshape(len(blocks), -1), *_affine(blocks, qtype)


def repack(blocks: torch.Tensor, qtype: str, shape: tuple[int, int]) -> Int4Weight:
    """The GGUF blocks of a [N, K] matrix (uint8, N * K / block whole blocks, row-major) as Int4Weight."""
    if not fits(qtype, shape):
        raise ValueError(f"a {qtype} matrix of shape {tuple(shape)} does not fit the CPU int4 layout")
    rows, cols = shape
    _block, type_size = gguf_dequant.block_size(qtype)
    blocks = blocks.reshape(-1, type_size)
    scale, zero = _affine(blocks, qtype)
    qs = _packed_quants(blocks, qtype)
    block = _pack_rows() if available() else None
    if block is None:
        q = gguf_dequant._nibbles(qs, qs.shape[1], qs.shape[2])
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.reshape(rows, cols).to(torch.int32), 1)
    else:
        packed = _pack_nibbles(qs.view(rows, -1, *qs.shape[1:]), block)
    return Int4Weight((rows, cols), packed, _scales_and_zeros(scale.view(rows, -1), zero.view(rows, -1)))


def _scales_and_zeros(scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """scale, zero float32 [N, K/32] -> bfloat16 [K/32, N, 2]: rounded into [N, K/32, 2], then each (scale, zero)
    pair moved as one 4-byte word (the transpose costs per element moved)."""
    rows, groups = scale.shape
    sz = torch.empty(rows, groups, 2, dtype=torch.bfloat16)
    sz[..., 0] = scale
    sz[..., 1] = zero
    return sz.view(torch.int32).view(rows, groups).T.contiguous().view(torch.bfloat16).view(groups, rows, 2)


def _pack_blocks(q: torch.Tensor, block: int) -> torch.Tensor:
    """q uint8 [N, K] (0..15), N a multiple of 16, in the packer's layout for `block` rows: each whole block of rows
    k-major [K, block / 2] bytes, byte d of a k holding row d (low nibble) and row d + block / 2 (high); a last
    block of fewer rows [K, rows / 2] bytes, byte j holding rows 2j (low) and 2j + 1 (high)."""
    rows, cols = q.shape
    full = rows // block * block
    out = torch.empty(rows * cols // 2, dtype=torch.uint8)
    if full:
        src = q[:full].view(full // block, 2, block // 2, cols)
        byte = torch.bitwise_left_shift(src[:, 1], 4).bitwise_or_(src[:, 0])  # [NB, block / 2, K]
        out[:full * cols // 2].view(full // block, cols, block // 2).copy_(byte.transpose(1, 2))
    if full < rows:
        src = q[full:].view(-1, 2, cols)
        byte = torch.bitwise_left_shift(src[:, 1], 4).bitwise_or_(src[:, 0])  # [rows / 2, K]
        out[full * cols // 2:].view(cols, -1).copy_(byte.T)
    return out.view(rows, cols // 2)


def _pair_bytes(low: torch.Tensor, high: torch.Tensor, out: torch.Tensor) -> None:
    """Quant bytes `low`, `high` [..., width] (two rows' groups, nibble-split as _packed_quants) -> out [..., 2, width]:
    each element of the `low` row in a low nibble, the same element of the `high` row in the high nibble."""
    torch.bitwise_and(low, 0x0F, out=out[..., 0, :]).bitwise_or_(torch.bitwise_left_shift(high, 4))
    torch.bitwise_right_shift(low, 4, out=out[..., 1, :]).bitwise_or_(torch.bitwise_and(high, 0xF0))


def _pack_nibbles(qs: torch.Tensor, block: int) -> torch.Tensor:
    """_pack_blocks of the quants whose bytes `qs` [N, blocks per row, groups, width] hold (_packed_quants), straight
    from the nibbles: each output byte is the low or high nibble of two input bytes, then the blocks turned k-major."""
    rows, per_row, groups, width = qs.shape
    cols = per_row * groups * 2 * width
    full = rows // block * block
    out = torch.empty(rows * cols // 2, dtype=torch.uint8)
    if full and _word_aligned(qs) and block % 16 == 0:
        step = max(1, _PACK_CHUNK_BYTES // (block * cols // 2)) * block  # rows per chunk, whole blocks
        for r in range(0, full, step):
            end = min(r + step, full)
            _pack_words(qs[r:end], block, out[r * cols // 2:end * cols // 2])
    elif full:
        nb, half = full // block, block // 2
        src = qs[:full].view(nb, 2, half, per_row, groups, width)
        pairs = torch.empty(nb, half, per_row, groups, 2, width, dtype=torch.uint8)
        _pair_bytes(src[:, 0], src[:, 1], pairs)
        out[:full * cols // 2].view(nb, cols, half).copy_(pairs.view(nb, half, cols).transpose(1, 2))
    if full < rows:
        src = qs[full:].view(-1, 2, per_row, groups, width)
        pairs = torch.empty(len(src), per_row, groups, 2, width, dtype=torch.uint8)
        _pair_bytes(src[:, 0], src[:, 1], pairs)
        out[full * cols // 2:].view(cols, -1).copy_(pairs.view(len(src), cols).T)
    return out.view(rows, cols // 2)


# Packed bytes per chunk of whole blocks: the chunk's few buffers stay in cache between the ~20 passes (2 shared EPYC
# cores, 8192x2048 and 2048x8192: 11-16 ms whole, 7-9 ms by 2^19-2^21 bytes).
_PACK_CHUNK_BYTES = 1 << 20
_LOW_NIBBLES = 0x0F0F0F0F0F0F0F0F
_HIGH_NIBBLES = 0xF0F0F0F0F0F0F0F0 - (1 << 64)  # as int64
# An 8x8 byte transpose across 8 int64 words, in three swaps: (words apart, bits, the mask of what stays low)
_SWAPS = ((4, 32, 0x00000000FFFFFFFF), (2, 16, 0x0000FFFF0000FFFF), (1, 8, 0x00FF00FF00FF00FF))


def _word_aligned(qs: torch.Tensor) -> bool:
    """Whether the quant bytes read as int64 words in place: 8-byte aligned, whole words per group."""
    return qs.storage_offset() % 8 == 0 and all(st % 8 == 0 for st in qs.stride()[:-1]) and qs.shape[-1] % 8 == 0


def _pack_words(qs: torch.Tensor, block: int, out: torch.Tensor) -> None:
    """The whole blocks of _pack_nibbles (qs [NB * block, per row, groups, width], _word_aligned) into `out`, on int64
    words of 8 bytes rather than bytes (torch copies a permuted tensor at about the same cost per element whatever
    its size, so a byte transpose costs 8 times a word's): the rows' words are laid out [row % 8, block, k / 8,
    row / 8 within the half block], paired into nibbles (bytewise masks), then each 8 words of 8 rows turned into
    8 words of 8 columns (three swaps of halves, quarters, eighths) and laid out [block, k, rows of the half]."""
    rows, per_row, groups, width = qs.shape
    nb, spans, w8 = rows // block, block // 16, width // 8
    words = qs.view(torch.int64)  # [rows, per row, groups, width / 8]
    src = words.view(nb, 2, spans, 8, per_row, groups, w8).permute(1, 3, 0, 4, 5, 6, 2).contiguous()
    low, high = src[0], src[1]  # [8, NB, per row, groups, w8, spans]: rows d and d + block / 2
    x = torch.empty(8, nb, per_row, groups, 2, w8, spans, dtype=torch.int64)
    torch.bitwise_and(low, _LOW_NIBBLES, out=x[:, :, :, :, 0]).bitwise_or_(
        torch.bitwise_left_shift(high, 4).bitwise_and_(_HIGH_NIBBLES))
    torch.bitwise_right_shift(low, 4, out=x[:, :, :, :, 1]).bitwise_and_(_LOW_NIBBLES).bitwise_or_(
        torch.bitwise_and(high, _HIGH_NIBBLES))
    for apart, bits, mask in _SWAPS:
        pairs = x.view(8 // (2 * apart), 2, apart, -1)
        a, b = pairs[:, 0], pairs[:, 1]
        moved_down = torch.bitwise_right_shift(a, bits).bitwise_and_(mask)
        moved_up = torch.bitwise_and(b, mask).bitwise_left_shift_(bits)
        a.bitwise_and_(mask).bitwise_or_(moved_up)
        b.bitwise_and_(~mask).bitwise_or_(moved_down)
    cols8 = per_row * groups * 2 * w8
    out.view(torch.int64).view(nb, cols8, 8, spans).copy_(x.view(8, nb, cols8, spans).permute(1, 2, 0, 3))


@functools.lru_cache(maxsize=1)
def _pack_rows() -> int | None:
    """The rows per block of torch's packer on this CPU (64 with AVX-512, 32 with AVX2) where `_pack_blocks`
    reproduces it byte for byte on a probe of whole blocks and every tail; None: torch's own packer is used."""
    gen = torch.Generator().manual_seed(0)
    probes = [_packed_quants(torch.randint(0, 256, (rows * 2, size), generator=gen, dtype=torch.uint8), qtype)
              .view(rows, 2, -1, width)
              for rows in (2 * PACK_ROWS + 16, PACK_ROWS + 32, PACK_ROWS + 48, 16, PACK_ROWS)
              for qtype, size, width in (("Q4_0", 18, 16), ("Q4_K", 144, 32))]  # bytes as is, word-aligned
    for block in (PACK_ROWS, PACK_ROWS // 2):
        if all(_probe(qs, block) for qs in probes):
            return block
    return None


def _probe(qs: torch.Tensor, block: int) -> bool:
    q = gguf_dequant._nibbles(qs.reshape(-1, qs.shape[2], qs.shape[3]), qs.shape[2], qs.shape[3]).reshape(len(qs), -1)
    expected = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1)
    return torch.equal(_pack_blocks(q, block), expected) and torch.equal(_pack_nibbles(qs, block), expected)


def pack(q: torch.Tensor) -> torch.Tensor:
    """q uint8 [N, K] (values 0..15) -> torch's CPU int4 pack of it (`_convert_weight_to_int4pack_for_cpu(q, 1)`),
    byte for byte. The layout is computed here in a few uint8 passes where the probe (`_pack_rows`) found it; torch's
    packer takes int32 (4 bytes per 4-bit value) and ran at a third of the load's time (2 shared EPYC cores)."""
    block = _pack_rows() if available() else None
    if block is None:
        return torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1)
    return _pack_blocks(q, block)


def can_stack(first: Int4Weight) -> bool:
    """Whether another matrix may be stacked below `first` (its rows fill whole packer blocks)."""
    return first.shape[0] % PACK_ROWS == 0


def cat_rows(weights: list[Int4Weight]) -> Int4Weight:
    """Matrices of one input width stacked along the output rows (fused q/k/v, gate/up)."""
    if any(w.shape[1] != weights[0].shape[1] for w in weights) or not all(map(can_stack, weights[:-1])):
        raise ValueError("only matrices of one input width, whole packer blocks of rows but the last, can be stacked")
    return Int4Weight((sum(w.shape[0] for w in weights), weights[0].shape[1]),
                      torch.cat([w.packed for w in weights]), torch.cat([w.scales_and_zeros for w in weights], dim=1))


def prefill_rows(dtype: torch.dtype) -> int:
    """Rows of x from which int4_linear runs the GEMM of the scratch's dtype on the dequantized weight."""
    return PREFILL_ROWS_FLOAT32 if dtype == torch.float32 else PREFILL_ROWS


def int4_linear(x: torch.Tensor, w: Int4Weight, scratch: Int4Scratch | None = None) -> torch.Tensor:
    """x [..., K] @ W^T -> [..., N] in x's dtype; the kernel computes with bfloat16 activations, float32
    accumulation. With a scratch buffer and at least prefill_rows(its dtype) rows, through the weight dequantized
    into it: a bfloat16 GEMM for a bfloat16 model, a float32 one (x as it is) for a float32 model."""
    flat = x.reshape(-1, w.shape[1])
    if scratch is not None and len(flat) >= prefill_rows(scratch.dtype) and int4_unpack.supported():
        y = flat.to(scratch.dtype) @ int4_unpack.dequantize_t(w, scratch)
    else:
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat.to(torch.bfloat16), w.packed, GROUP, w.scales_and_zeros)
    return y.to(x.dtype).reshape(*x.shape[:-1], w.shape[0])


def error_bound(x: torch.Tensor, blocks: torch.Tensor, qtype: str, shape: tuple[int, int],
                y_ref: torch.Tensor, dequantized: bool = False) -> torch.Tensor:
    """The elementwise bound on |int4_linear(x, W) - x @ W_exact^T| derived in the module docstring;
    `dequantized`: through the prefill path, whose bfloat16 weights add one more 2^-8 relative rounding."""
    _, type_size = gguf_dequant.block_size(qtype)
    q, scale, zero = _quants_and_affine(blocks.reshape(-1, type_size), qtype)
    rows, cols = shape
    q = q.reshape(rows, cols // GROUP, GROUP).float()
    magnitude = (q - 8).abs() * scale.reshape(rows, -1, 1).abs() + zero.reshape(rows, -1, 1).abs()
    mass = x.float().abs() @ magnitude.reshape(rows, cols).T
    accumulate = cols * 2.0 ** -23
    roundings = 3 * _BF16_U + 3 * _BF16_U ** 2 if dequantized else 2 * _BF16_U + _BF16_U ** 2
    return (roundings + accumulate) * mass + _BF16_U * y_ref.abs() * (1 + 2 * _BF16_U)
