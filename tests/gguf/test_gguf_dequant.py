"""The torch block dequantizers against gguf.quants.dequantize (the spec): bit-identical float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from velollm.kernels import gguf_dequant
from velollm.kernels.gguf_dequant import SUPPORTED_TYPES, dequantize

LEGACY = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")  # gguf.quants can quantize these
KQUANT_FILES = ("Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K")
# byte offsets of each block's float16 scale/min fields
F16_FIELDS = {"Q8_0": (0,), "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2),
              "Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}


def _qtype(name: str):
    import gguf

    return gguf.GGMLQuantizationType[name]


def _reference(raw: np.ndarray, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    import gguf

    rows = raw.reshape(int(np.prod(shape[:-1])), -1)
    return torch.from_numpy(gguf.quants.dequantize(rows, _qtype(name))).reshape(shape)


def _random_blocks(name: str, rows: int, cols: int, seed: int) -> np.ndarray:
    """Every bit pattern of quants and packed scales, with finite float16 fields (exponent < 16)."""
    import gguf

    block, type_size = gguf.GGML_QUANT_SIZES[_qtype(name)]
    raw = np.random.default_rng(seed).integers(0, 256, size=(rows * cols // block, type_size), dtype=np.uint8)
    for at in F16_FIELDS[name]:
        raw[:, at + 1] &= 0xBF
    return raw.reshape(-1)


def test_supported_types():
    assert {"Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"} == SUPPORTED_TYPES
    assert set(F16_FIELDS) == SUPPORTED_TYPES


@pytest.mark.parametrize("name", LEGACY)
@pytest.mark.parametrize("rows", [1, 7, 33])
def test_legacy_types_from_gguf_quantizer(name, rows):
    import gguf

    rng = np.random.default_rng(rows)
    data = (rng.standard_normal((rows, 96)) * rng.uniform(0.001, 10, size=(rows, 1))).astype(np.float32)
    data[0, :32] = 0.0  # a zero block: scale 0
    data[-1, 32:64] = 7.5  # a constant block: min == max for the _1 types
    raw = gguf.quants.quantize(data, _qtype(name))
    ours = dequantize(raw, name, (rows, 96))
    ref = _reference(raw, name, (rows, 96))
    assert ours.dtype == torch.float32 and ours.shape == (rows, 96)
    assert torch.equal(ours, ref)
    assert (ours - torch.from_numpy(data)).abs().max() < 0.5 * float(np.abs(data).max())  # really the data


@pytest.mark.parametrize("name", sorted(SUPPORTED_TYPES))
def test_random_blocks_across_chunks(monkeypatch, name):
    import gguf

    block, _ = gguf.GGML_QUANT_SIZES[_qtype(name)]
    # 3 blocks per chunk, so that 5 rows of 2 blocks end in a partial chunk
    monkeypatch.setattr(gguf_dequant, "_CHUNK_ELEMENTS", 3 * block)
    shape = (5, 2 * block)
    raw = _random_blocks(name, *shape, seed=len(name))
    ref = _reference(raw, name, shape)
    assert torch.equal(dequantize(raw, name, shape), ref)
    assert torch.equal(dequantize(memoryview(raw.tobytes()), name, shape), ref)
    assert torch.equal(dequantize(raw, name, shape, torch.bfloat16), ref.to(torch.bfloat16))
    assert torch.equal(dequantize(raw, name, (10, block)), ref.reshape(10, block))


@pytest.mark.parametrize("name", sorted(SUPPORTED_TYPES))
def test_random_blocks_odd_rows_3d(name):
    import gguf

    block, _ = gguf.GGML_QUANT_SIZES[_qtype(name)]
    shape = (3, 13, block * 3)
    raw = _random_blocks(name, 39, block * 3, seed=7)
    assert torch.equal(dequantize(raw, name, shape), _reference(raw, name, shape))


@pytest.mark.parametrize("name", sorted(SUPPORTED_TYPES))
@pytest.mark.parametrize("offset", [1, 2, 4])
def test_blocks_at_any_address(name, offset):
    """The float16 scales and Q4_K/Q5_K's scale words are read in place where aligned, from a copy where not: the
    values are the same wherever the blocks start (a map's tensors are aligned; a caller's bytes may not be)."""
    import gguf

    block, _ = gguf.GGML_QUANT_SIZES[_qtype(name)]
    raw = _random_blocks(name, 3, 2 * block, seed=offset)
    buf = torch.zeros(raw.size + offset, dtype=torch.uint8)
    buf[offset:] = torch.from_numpy(raw.reshape(-1))
    ref = _reference(raw, name, (3, 2 * block))
    assert torch.equal(dequantize(buf[offset:], name, (3, 2 * block)), ref)
    assert torch.equal(dequantize(buf[offset:], name, (3, 2 * block), torch.bfloat16), ref.to(torch.bfloat16))


@pytest.mark.parametrize("ftype", KQUANT_FILES)
def test_llama_cpp_kquant_tensors(fixtures, ftype):
    """Every tensor of a file quantized by llama.cpp, through the loader's _dequantize, and its
    first 3 rows alone (an odd row count)."""

    from velollm.engine.loader.gguf import _dequantize
    from velollm.engine.loader.gguf_file import GGUFFile

    seen = set()
    with GGUFFile(fixtures.kquant("llama", ftype)) as f:
        for info in f.tensors.values():
            if info.type_name not in SUPPORTED_TYPES:
                continue
            seen.add(info.type_name)
            raw = f.raw(info)
            ref = _reference(raw, info.type_name, info.shape)
            assert torch.equal(_dequantize(f, info), ref), info.name
            assert len(info.shape) == 2
            row_bytes = raw.size // info.shape[0]
            ours = dequantize(raw[:3 * row_bytes], info.type_name, (3, info.shape[1]))
            assert torch.equal(ours, ref[:3]), info.name
            del raw
    assert seen & {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}, f"{ftype}: no K-quant tensors"


def test_size_mismatch_and_unknown_type():
    raw = np.zeros(34 * 3, dtype=np.uint8)
    assert torch.equal(dequantize(raw, "Q8_0", (3, 32)), torch.zeros(3, 32))
    with pytest.raises(ValueError):
        dequantize(raw, "Q8_0", (4, 32))
    with pytest.raises(ValueError):
        dequantize(raw, "Q8_0", (3, 30))
    with pytest.raises(KeyError):
        dequantize(raw, "IQ4_XS", (3, 32))
