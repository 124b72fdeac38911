"""The engine flags every command that builds an engine shares (serve, run, generate, benchmark), and the
EngineConfig fields they make; $OLLAMA_KV_CACHE_TYPE and the kernel switches ($VELOLLM_PREFILL_ATTENTION,
$VELOLLM_DECODE_FUSED_REDUCE, $VELOLLM_SILU_DOWN_GEMV) are read here, at the edge."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from typing import Any

from velollm.config import KV_CACHE_DTYPE_ALIASES, KV_CACHE_DTYPES, KernelSwitches

logger = logging.getLogger(__name__)

# Ollama's OLLAMA_KV_CACHE_TYPE values -> --kv-cache-dtype. VeloLLM's 8-bit KV cache is fp8 e4m3, not
# q8_0's int8 blocks; it has no 4-bit one, so q4_0 gets the 8-bit cache, the nearest saving.
_OLLAMA_KV_CACHE_TYPES = {"f16": "auto", "q8_0": "fp8", "q4_0": "fp8"}


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """--kv-cache-dtype, --async-scheduling and --[no-]enable-prefix-caching (read back with `engine_options`)."""
    parser.add_argument("--kv-cache-dtype", default=None, choices=(*KV_CACHE_DTYPES, *KV_CACHE_DTYPE_ALIASES),
                        help="KV cache storage: auto (the model's dtype) or fp8 (float8 e4m3, half the memory, so "
                             "twice the tokens; GPUs need compute capability 8.9+, older ones keep auto with a "
                             "warning). Default: $OLLAMA_KV_CACHE_TYPE mapped (q8_0 -> fp8, f16 -> auto), else auto")
    parser.add_argument("--async-scheduling", action="store_true",
                        help="schedule step N+1 while step N runs on the device (vLLM V1's async scheduling)")
    parser.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=True,
                        help="reuse the KV blocks of a prompt prefix seen before (vLLM's spelling; default on). "
                             "--no-enable-prefix-caching computes every prompt in full: no cached tokens, and no "
                             "background prefill of a chat's next turn")


def engine_options(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    """The EngineConfig keyword arguments of `add_engine_arguments`' flags, and the kernel switches of `env`
    (ValueError naming the variable for a bad value)."""
    return {"kv_cache_dtype": kv_cache_dtype(getattr(args, "kv_cache_dtype", None), env),
            "async_scheduling": bool(getattr(args, "async_scheduling", False)),
            "enable_prefix_caching": bool(getattr(args, "enable_prefix_caching", True)),
            "kernel_switches": KernelSwitches.from_env(env)}


def engine_flags(args: argparse.Namespace) -> list[str]:
    """The flags as given, to pass on to a `velollm serve` this command starts."""
    flags = ["--kv-cache-dtype", args.kv_cache_dtype] if getattr(args, "kv_cache_dtype", None) else []
    flags += ["--async-scheduling"] if getattr(args, "async_scheduling", False) else []
    return flags + ([] if getattr(args, "enable_prefix_caching", True) else ["--no-enable-prefix-caching"])


def kv_cache_dtype(flag: str | None, env: Mapping[str, str]) -> str:
    """--kv-cache-dtype if given, else $OLLAMA_KV_CACHE_TYPE mapped (logged), else auto."""
    if flag is not None:
        return flag
    ollama = env.get("OLLAMA_KV_CACHE_TYPE", "").strip().lower()
    if not ollama:
        return "auto"
    mapped = _OLLAMA_KV_CACHE_TYPES.get(ollama)
    if mapped is None:
        logger.warning("OLLAMA_KV_CACHE_TYPE=%s is not one of %s (Ollama's); the KV cache stays auto", ollama,
                       "/".join(_OLLAMA_KV_CACHE_TYPES))
        return "auto"
    if mapped == "fp8":
        logger.info("OLLAMA_KV_CACHE_TYPE=%s: VeloLLM's 8-bit KV cache is fp8 e4m3 (float8, per-tensor scale 1.0%s), "
                    "i.e. --kv-cache-dtype fp8", ollama, "; there is no 4-bit one" if ollama == "q4_0" else "")
    else:
        logger.info("OLLAMA_KV_CACHE_TYPE=%s: the KV cache keeps the model's dtype (--kv-cache-dtype auto)", ollama)
    return mapped
