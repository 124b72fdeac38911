"""Compile every Triton kernel for sm_90 (H100/H200) on a machine without a GPU.

The interpreter skips what the compiler checks (loop-carried types, layouts, shared memory), so this
catches kernels that pass the CPU tests but would not build on the GPU. Run by test_kernels_compile.py
in a subprocess, since the test process runs the kernels interpreted. Exit 0 when all compile.
"""

from __future__ import annotations

import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from velollm.kernels import activation, decode_attention as da, norm, prefill_attention as pa, rope, silu_gemv
from velollm.kernels import quant_gemm, quant_gemv, quant_rows
from velollm.kernels.gguf_planes import QUANT_TYPES

TARGET = GPUTarget("cuda", 90, 32)
I32 = "i32"
FP8 = "*fp8e4nv"  # a torch.float8_e4m3fn KV cache
MAX_SHARED = 99 * 1024  # bytes per block, opt-in, on sm_86 / sm_89 (the largest kernel here takes 48 KiB)


def compile_kernel(name: str, fn, types: dict[str, str], constexprs: dict, num_warps: int = 4,
                   target: GPUTarget = TARGET) -> bool:
    signature = {n: "constexpr" if n in constexprs else types[n] for n in fn.arg_names}
    src = ASTSource(fn=fn, signature=signature,
                    constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    try:
        kernel = triton.compile(src, target=target, options={"num_warps": num_warps})
    except Exception as exc:  # report every failing kernel, not only the first
        print(f"FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
        return False
    # Shared memory is checked only when a GPU loads the kernel (OutOfResources at the first launch): hold
    # every kernel to the smallest opt-in limit of the GPUs it runs on (sm_86 / sm_89: 99 KiB; H100 227 KiB).
    if kernel.metadata.shared > MAX_SHARED:
        print(f"FAIL {name}: {kernel.metadata.shared} bytes of shared memory > {MAX_SHARED}", flush=True)
        return False
    print(f"ok   {name}", flush=True)
    return True


def main() -> int:
    p = "*bf16"
    dot = dict(DOT_PRECISION="tf32", DOT_F32=False)
    ok = []
    for has_res in (False, True):
        ok.append(compile_kernel(f"rms_norm residual={has_res}", norm._rms_norm_kernel, dict(
            x_ptr=p, res_ptr=p, w_ptr=p, out_ptr=p, res_out_ptr=p, x_stride=I32, res_stride=I32, out_stride=I32,
            res_out_stride=I32, n_cols=I32, eps="fp32"), dict(HAS_RESIDUAL=has_res, BLOCK=4096), num_warps=8))
    ok.append(compile_kernel("silu_and_mul", activation._silu_and_mul_kernel, dict(
        x_ptr=p, out_ptr=p, x_stride=I32, out_stride=I32, inter=I32), dict(BLOCK=1024)))
    for half, hq, hkv in ((64, 32, 8), (40, 6, 2)):
        ok.append(compile_rope(f"rope_and_cache half={half}", p, p, half, hq, hkv))
    for single, lens, fused in ((True, "*i32", False), (False, "*i64", False), (False, "*i32", True)):
        ok.append(compile_decode(f"decode single_split={single} lens={lens} fused_reduce={fused}", p, p, lens,
                                 single, dot, fused))
    ok.append(compile_kernel("decode reduce", da._reduce_kernel, dict(
        out_ptr=p, m_ptr="*fp32", l_ptr="*fp32", acc_ptr="*fp32", out_b_stride=I32, out_h_stride=I32,
        num_heads=I32, num_splits=I32), dict(HEAD_DIM=128, HEAD_DIM_PAD=128, SPLITS_PAD=4)))
    for block_m, block_n in ((64, 64), (128, 32)):  # pa.DEFAULT_TILE and pa.PREFILL_TILES' largest
        ok.append(compile_prefill(f"prefill block_m={block_m} block_n={block_n}", p, p, dot, block_m, block_n))
    for m_pad in (1, 4):
        ok.append(compile_kernel(f"silu_mul_gemv M_PAD={m_pad}", silu_gemv._silu_mul_gemv_kernel, dict(
            x_ptr=p, w_ptr=p, out_ptr=p, M=I32, N=I32, inter=I32, x_stride=I32, w_stride=I32, out_stride=I32),
            dict(M_PAD=m_pad, BLOCK_N=silu_gemv._BLOCK_N, BLOCK_K=silu_gemv._BLOCK_K, EVEN_K=True)))
    ok += compile_quantized(p, dot)
    ok += compile_fp8_kv(p, dot)
    return 0 if all(ok) else 1


def compile_rope(name: str, p: str, cache: str, half: int, hq: int, hkv: int,
                 target: GPUTarget = TARGET) -> bool:
    return compile_kernel(name, rope._rope_and_cache_kernel, dict(
        q_ptr=p, k_ptr=p, v_ptr=p, pos_ptr="*i64", cos_sin_ptr="*fp32", slot_ptr="*i64", q_out_ptr=p,
        k_out_ptr=p, k_cache_ptr=cache, v_cache_ptr=cache, q_t_stride=I32, q_h_stride=I32, k_t_stride=I32,
        k_h_stride=I32, v_t_stride=I32, v_h_stride=I32, cache_block_stride=I32, cache_slot_stride=I32,
        cache_h_stride=I32, num_q_heads=I32, num_kv_heads=I32, block_size=I32), dict(
        HALF=half, HALF_PAD=triton.next_power_of_2(half), Q_HEADS_PAD=triton.next_power_of_2(hq),
        KV_HEADS_PAD=triton.next_power_of_2(hkv), KV_FP8=cache == FP8), target=target)


def compile_decode(name: str, p: str, cache: str, lens: str, single: bool, dot: dict, fused: bool = False,
                   target: GPUTarget = TARGET) -> bool:
    return compile_kernel(name, da._decode_kernel, dict(
        q_ptr=p, k_cache_ptr=cache, v_cache_ptr=cache, block_tables_ptr="*i32", context_lens_ptr=lens, out_ptr=p,
        m_ptr="*fp32", l_ptr="*fp32", acc_ptr="*fp32", counter_ptr="*i32", qk_scale="fp32", tokens_per_split=I32,
        q_b_stride=I32, q_h_stride=I32, bt_stride=I32, cache_block_stride=I32, cache_slot_stride=I32,
        cache_h_stride=I32, out_b_stride=I32, out_h_stride=I32, block_size=I32, num_splits=I32), dict(
        GROUP=4, GROUP_PAD=16, HEAD_DIM=128, HEAD_DIM_PAD=128, BLOCK_N=64, SINGLE_SPLIT=single,
        FUSED_REDUCE=fused, **dot), target=target)


def compile_prefill(name: str, p: str, cache: str, dot: dict, block_m: int = 64, block_n: int = 64,
                    target: GPUTarget = TARGET) -> bool:
    return compile_kernel(name, pa._prefill_kernel, dict(
        q_ptr=p, k_cache_ptr=cache, v_cache_ptr=cache, block_tables_ptr="*i32", cu_seqlens_ptr="*i32",
        context_lens_ptr="*i32", out_ptr=p, qk_scale="fp32", q_t_stride=I32, q_h_stride=I32, out_t_stride=I32,
        out_h_stride=I32, bt_stride=I32, cache_block_stride=I32, cache_slot_stride=I32, cache_h_stride=I32,
        block_size=I32), dict(GROUP=4, HEAD_DIM=128, HEAD_DIM_PAD=128, BLOCK_M=block_m, BLOCK_N=block_n, **dot),
        target=target)


def compile_fp8_kv(p: str, dot: dict) -> list[bool]:
    """The KV-cache kernels over an fp8 (e4m3) cache, for Hopper and for Ada (sm_89: the oldest GPUs
    with native fp8 conversions, velollm/kernels/fp8.py)."""
    ok = []
    for target in (TARGET, GPUTarget("cuda", 89, 32)):
        sm = f"fp8 sm_{target.arch}"
        ok.append(compile_rope(f"rope_and_cache {sm}", p, FP8, 64, 32, 8, target))
        ok.append(compile_decode(f"decode {sm}", p, FP8, "*i32", False, dot, True, target))
        ok.append(compile_prefill(f"prefill {sm}", p, FP8, dot, target=target))
    return ok


def compile_quantized(p: str, dot: dict) -> list[bool]:
    """The three quantized kernels for every GGUF type, with the plane pointer types each type has."""
    ok = []
    for name, spec in QUANT_TYPES.items():
        planes = {"qs_ptr": "*i8" if name == "Q8_0" else "*u8", "qh_ptr": "*u8",
                  "sc_ptr": "*i8" if name == "Q6_K" else "*u8", "d_ptr": "*fp16",
                  "qs_stride": I32, "qh_stride": I32, "sc_stride": I32, "d_stride": I32}
        qtype = dict(QTYPE=spec.code, QK=spec.block, QS_BYTES=spec.qs_bytes, SHIFTS=spec.shifts)
        for m_pad, out in ((1, p), (8, "*fp32")) if name == "Q4_K" else ((1, p),):
            ok.append(compile_kernel(f"quant_gemv {name} M_PAD={m_pad}", quant_gemv._gemv_kernel, dict(
                x_ptr=p, out_ptr=out, M=I32, N=I32, row_bytes=I32, bytes_per_split=I32, x_stride=I32,
                out_stride=I32, split_stride=I32, **planes), dict(M_PAD=m_pad, BLOCK_N=8, BLOCK_B=256 // m_pad,
                                                                   GROUP=spec.group, **qtype)))
        ok.append(compile_kernel(f"quant_gemm {name}", quant_gemm._gemm_kernel, dict(
            x_ptr=p, out_ptr=p, M=I32, N=I32, row_bytes=I32, x_stride=I32, out_stride=I32, **planes),
            dict(BLOCK_M=64, BLOCK_N=32 if name == "Q3_K" else 64, BLOCK_B=32, GROUP_M=8, GROUP=spec.group, **dot,
                 **qtype), num_warps=8))
        ok.append(compile_kernel(f"quant_rows {name}", quant_rows._rows_kernel, dict(
            ids_ptr="*i64", out_ptr=p, row_bytes=I32, out_stride=I32, **planes), dict(BLOCK_B=128, **qtype)))
    return ok


if __name__ == "__main__":
    sys.exit(main())
