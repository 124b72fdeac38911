"""Triton import guard and launch helpers shared by the kernel modules.

Kernel modules import `triton`/`tl` from here so they load on machines without triton.

Without triton the `@triton.jit` functions stay plain Python functions that are never launched; the
dispatch in `velollm.kernels` only takes the Triton path when `HAS_TRITON` and the tensors are on CUDA.
Importing triton does not initialise CUDA.
"""

from __future__ import annotations

from typing import Any

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # CPU-only installs keep the torch path
    HAS_TRITON = False

    class _Placeholder:
        constexpr = Any
        dtype = Any

        @staticmethod
        def jit(fn: Any = None, **_: Any) -> Any:
            return fn if fn is not None else (lambda f: f)

        @staticmethod
        def cdiv(a: int, b: int) -> int:
            return -(-a // b)

        @staticmethod
        def next_power_of_2(n: int) -> int:
            return 1 << (max(n, 1) - 1).bit_length()

    triton = tl = _Placeholder()  # type: ignore[assignment]


def is_interpreted(kernel: Any) -> bool:
    """True when `kernel` was built under TRITON_INTERPRET=1 (the CPU interpreter)."""
    return type(kernel).__name__ == "InterpretedFunction"


def interpreter_tile(kernel: Any, size: int, tile: int) -> int:
    """`tile` on the GPU; under the interpreter, where each program costs milliseconds of Python, one tile
    covering `size` (up to 256) so that model-level tests stay fast. Kernel tests pass explicit tiles."""
    return min(256, max(tile, 1 << (max(size, 1) - 1).bit_length())) if is_interpreted(kernel) else tile


def dot_dtype_args(dtype: Any, kernel: Any) -> dict[str, Any]:
    """Constexprs for kernels that call tl.dot on cache-dtype tiles.

    float32 asks for IEEE products (not TF32). The interpreter multiplies the raw uint16 storage of
    bfloat16 in tl.dot, so interpreted runs upcast the dot operands to float32 (DOT_F32).
    """
    return {
        "DOT_PRECISION": "ieee" if dtype == torch.float32 else "tf32",
        "DOT_F32": dtype == torch.float32 or is_interpreted(kernel),
    }


def launch_options(num_warps: int, num_stages: int | None) -> dict[str, int]:
    return {"num_warps": num_warps} | ({} if num_stages is None else {"num_stages": num_stages})


def output_buffer(
    buf: torch.Tensor | None, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, name: str
) -> torch.Tensor:
    """`buf` checked to fit (a caller-owned buffer: CUDA-graph statics, poisoned test outputs), or a new one."""
    if buf is None:
        return torch.empty(shape, dtype=dtype, device=device)
    if tuple(buf.shape) != tuple(shape) or buf.dtype != dtype or not buf.is_contiguous():
        raise ValueError(f"{name} must be a contiguous {dtype} tensor of shape {tuple(shape)}")
    return buf


__all__ = ["HAS_TRITON", "dot_dtype_args", "interpreter_tile", "is_interpreted", "launch_options", "output_buffer", "tl",
           "triton"]
