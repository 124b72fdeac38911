"""velollm.engine.loader.kquants (and legacy_quants' Q5_0 / Q5_1 fallbacks) against ggml's own reference quantizers, called in the libggml-base that
llama-cpp-python ships (`ggml_quantize_chunk` without an importance matrix runs `quantize_row_q*_K_ref`): the
same bytes for every block, random and edge-case values alike.

Exact equality holds because both sides do IEEE float32 arithmetic in the same order: numpy's element-wise
float32 operations are correctly rounded on every CPU, and ggml-base is built without the CPU backend's
-march flags, so its reference quantizers have no fused multiply-adds (`objdump -d libggml-base.so | grep vfmadd`
finds none in llama-cpp-python 0.3.36 as installed here). A build that contracted `s += w*x` into FMAs could
differ in rare blocks; that would be the library's float order, not this port's, and this test would name the
blocks.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest

from velollm.engine.loader import kquants, legacy_quants

GGML_TYPE = {"Q4_K": 12, "Q5_K": 13, "Q6_K": 14, "Q5_0": 6, "Q5_1": 7}
OURS = {"Q4_K": kquants.quantize_q4_k, "Q5_K": kquants.quantize_q5_k, "Q6_K": kquants.quantize_q6_k,
        "Q5_0": lambda x: legacy_quants.quantize_q5_0(x.reshape(-1, 32)).reshape(x.shape[0], -1),
        "Q5_1": lambda x: legacy_quants.quantize_q5_1(x.reshape(-1, 32)).reshape(x.shape[0], -1)}
BYTES = {**kquants.BLOCK_BYTES, "Q5_0": 22 * 8, "Q5_1": 24 * 8}  # per 256 values


@pytest.fixture(scope="module")
def ggml():
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    path = Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"
    if not path.exists():
        pytest.skip(f"no {path}")
    lib = ctypes.CDLL(str(path))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return lib


def _theirs(lib, kind: str, x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.zeros((x.shape[0], BYTES[kind]), np.uint8)
    lib.ggml_quantize_init(GGML_TYPE[kind])
    written = lib.ggml_quantize_chunk(GGML_TYPE[kind], x.ctypes.data, out.ctypes.data, 0, x.shape[0], 256, None)
    assert written == out.nbytes
    return out


def _cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    normal = rng.standard_normal((600, 256)).astype(np.float32)
    mixed = normal[:64].copy()
    mixed[0] = 0  # an all-zero super-block
    mixed[1, :32] = 0  # one all-zero sub-block
    mixed[2, 40:] = 7.0  # constant sub-blocks beside varied ones
    mixed[3, ::2] = 0
    mixed[4, 100] = 1e4  # one outlier
    mixed[5] = np.where(rng.random(256) < 0.5, -0.0, 0.0)  # signed zeros: C keeps the first one it sees
    with np.errstate(over="ignore"):
        return {
            "normal": normal, "mixed": mixed,
            "zeros": np.zeros((4, 256), np.float32), "zeros-negative": np.full((2, 256), -0.0, np.float32),
            "constant": np.full((3, 256), 0.5, np.float32), "constant-negative": np.full((3, 256), -0.5, np.float32),
            "tiny": (normal[:100] * 1e-30).astype(np.float32), "subnormal": (normal[:50] * 1e-40).astype(np.float32),
            "huge": (normal[:100] * 1e30).astype(np.float32), "overflowing": (normal[:50] * 3e38).astype(np.float32),
            "positive": np.abs(normal[:100]), "negative": -np.abs(normal[:100]),
            "f16-values": normal[:200].astype(np.float16).astype(np.float32),
            "small-integers": rng.integers(-3, 4, (100, 256)).astype(np.float32),
            "weights-like": (normal * 0.02).astype(np.float32),
        }


@pytest.mark.parametrize("kind", ["Q4_K", "Q5_K", "Q6_K", "Q5_0", "Q5_1"])
@pytest.mark.parametrize("case", list(_cases()))
def test_blocks_as_ggml_writes_them(ggml, kind, case):
    x = _cases()[case]
    ours, theirs = OURS[kind](x), _theirs(ggml, kind, x)
    assert ours.shape == theirs.shape and ours.dtype == np.uint8
    differing = np.nonzero((ours != theirs).any(axis=1))[0]
    assert differing.size == 0, f"{kind} {case}: blocks {differing[:10].tolist()} differ from ggml's"


def test_nearest_int_is_round_half_to_even():
    v = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999998, 4194303.0, -7.5], np.float32)
    assert kquants.nearest_int(v).tolist() == [0, 2, 2, 0, -2, 2, 4194303, -8]


def test_sequential_sum_is_c_order_not_pairwise():
    p = np.array([[1e8], [1.0], [-1e8], [1.0]] + [[1.0]] * 12, np.float32)
    # C: ((1e8 + 1) - 1e8) + 1 + ... = 0 + 1 + 1 + ... (the first 1 is lost to rounding)
    assert kquants.seq_sum(p)[0] == np.float32(13.0)
