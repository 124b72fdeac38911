"""fp8 (e4m3) KV-cache storage: how K/V values are written into a float8_e4m3fn cache.

The scale is fixed at 1.0 for K and for V (vLLM's default without calibrated checkpoint scales): a
scale measured on some first prefill would make a request's tokens depend on which request came
first. e4m3 holds |x| <= 448 with 3 mantissa bits (relative step 2^-3, so a rounding error <= 2^-4
of the value) down to 2^-6, then subnormals in steps of 2^-9. Post-RoPE K and V of Llama/Qwen-class
models are typically tens, outliers hundreds: inside that range (not checked here on real weights, no
GPU or checkpoint was at hand). Anything beyond is saturated to +-448 on write (a cast alone would give
NaN on some paths), so a finite input never becomes inf or NaN in the cache.

Readers (the paged attention kernels and their references) upcast the loaded values to the compute
dtype before the dot products; nothing else changes for them.
"""

from __future__ import annotations

import torch

from velollm.kernels._triton import tl, triton

FP8_KV_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0
# Triton converts to and from float8e4nv natively from compute capability 8.9 (Ada, Hopper) on.
FP8_MIN_CAPABILITY = (8, 9)


def fp8_supported(device: torch.device) -> bool:
    """Whether an fp8 KV cache runs on `device`: always on CPUs (torch references), on CUDA from 8.9."""
    if device.type != "cuda":
        return True
    return torch.cuda.get_device_capability(device) >= FP8_MIN_CAPABILITY


def to_cache_dtype(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x as stored in a cache of `dtype`: for fp8, saturated to +-448 then rounded to nearest even."""
    if dtype == FP8_KV_DTYPE:
        return x.float().clamp(-FP8_MAX, FP8_MAX).to(dtype)
    return x.to(dtype)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """Cache values as float32 (the references' reads). torch converts fp8 one value at a time on CPUs;
    instead e4m3's 7 exponent and mantissa bits go into a float16's (whose exponent bias is 8 more, hence
    the * 2^8), which converts vectorized: 3.5x faster, and bit-exact with `x.float()`, subnormals
    included. The NaN pattern (0x7F) would decode to 480, past e4m3's largest finite value (448), so
    a value beyond 448 is turned back into NaN."""
    if x.dtype != FP8_KV_DTYPE:
        return x.float()
    b = x.view(torch.uint8).to(torch.int16)
    out = (((b & 0x80) << 8) | ((b & 0x7F) << 7)).view(torch.float16).float() * 256.0
    if out.numel() and out.abs().amax() > FP8_MAX:
        out.masked_fill_(out.abs() > FP8_MAX, float("nan"))
    return out


def as_stored(x: torch.Tensor, cache_dtype: torch.dtype) -> torch.Tensor:
    """x as a cache of `cache_dtype` gives it back, in x's dtype: the fp8 round trip, else x itself.

    Attention that takes this step's k/v directly instead of reading the cache (the varlen prefill) sees
    them through this, so a prompt's result does not depend on whether its prefix was cached."""
    if cache_dtype != FP8_KV_DTYPE:
        return x
    return to_cache_dtype(x, cache_dtype).to(x.dtype)


@triton.jit
def round_to_e4m3(x):
    """float32 x saturated to +-448 and rounded to the nearest e4m3 value (ties to even), still in float32.

    The cast that follows is then exact, so the stored bits are torch's on every backend: the GPU's own
    conversion rounds the same way, and the interpreter's (which drops the carry of a rounded-up
    mantissa) gets values it need not round. Normal range: round the float32 bits to 3 mantissa bits.
    Below 2^-6 (e4m3 subnormals): round x * 2^9 to an integer.
    """
    x = tl.minimum(tl.maximum(x, -448.0), 448.0)
    bits = x.to(tl.int32, bitcast=True)
    normal = ((bits + 0x7FFFF + ((bits >> 20) & 1)) & -1048576).to(tl.float32, bitcast=True)  # -1048576: ~0xFFFFF
    t = x * 512.0
    n = tl.floor(t)
    frac = t - n
    odd = (n - 2.0 * tl.floor(n * 0.5)) != 0.0
    n = tl.where((frac > 0.5) | ((frac == 0.5) & odd), n + 1.0, n)
    subnormal = tl.where(n == 0.0, x * 0.0, n * (1.0 / 512.0))  # x * 0.0 keeps the sign of zero
    return tl.where(tl.abs(x) < 0.015625, subnormal, normal)
