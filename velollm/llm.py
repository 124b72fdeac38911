"""LLM: the offline, vLLM-shaped Python API."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from velollm.config import EngineConfig
from velollm.engine.llm_engine import LLMEngine
from velollm.outputs import RequestOutput
from velollm.sampling_params import SamplingParams

Prompt = str | list[int]


class LLM:
    """Runs a model in this process. No threads: nothing keeps the process alive.

    `kv_cache_memory` is the KV budget in bytes (CPU default: 2 GiB, allocated lazily; on CUDA the
    free memory times `gpu_memory_utilization` when not given). `enforce_eager` turns off the CUDA graphs
    that decode steps otherwise replay on CUDA; `async_scheduling` schedules each step while the previous
    one runs on the device. `quantization`: "auto" keeps GGUF weights quantized on
    CUDA (Triton kernels compute in place); on the CPU, for a bfloat16 or float32 model, it repacks the
    Q4_0/Q4_1/Q4_K matrices for torch's int4 kernel and dequantizes the rest at load; "none" always
    dequantizes; "gguf" always keeps them quantized (on the CPU through the torch reference).
    `kv_cache_dtype`: "auto" stores K/V in the model's dtype; "fp8" (alias "fp8_e4m3") in float8 e4m3, half
    the bytes per token (GPUs below compute capability 8.9 keep "auto" with a warning).
    """

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", **options: Any) -> None:
        """`options`: any other EngineConfig field (max_num_seqs, max_model_len, kv_cache_memory,
        max_num_batched_tokens, enable_prefix_caching, gpu_memory_utilization, enforce_eager, async_scheduling,
        quantization, kv_cache_dtype, kernel_switches). Without kernel_switches, $VELOLLM_PREFILL_ATTENTION,
        $VELOLLM_DECODE_FUSED_REDUCE and $VELOLLM_SILU_DOWN_GEMV are read here, once (ValueError for a bad value,
        before the model loads)."""
        config = EngineConfig(device=device, dtype=dtype, **options)
        self.engine: LLMEngine | None = LLMEngine.from_model(model, config, cache_dir=os.environ.get("VELOLLM_CACHE"))

    def get_tokenizer(self):
        return self._engine().tokenizer

    def generate(self, prompts: Prompt | Sequence[Prompt], params: SamplingParams | Sequence[SamplingParams] | None = None,
                 ) -> list[RequestOutput]:
        """One RequestOutput per prompt (n per prompt, in order, when params.n > 1)."""
        engine = self._engine()
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        params_list = list(params) if isinstance(params, Sequence) else [params or SamplingParams()] * len(prompts)
        if len(params_list) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(params_list)} SamplingParams")
        outputs: list[RequestOutput] = []
        by_id: dict[str, RequestOutput] = {}
        for prompt, sp in zip(prompts, params_list):
            ids = engine.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
            for i in range(sp.n):
                # The caller reads whole outputs: text is detokenized once per request, at its end.
                one = dataclasses.replace(sp, n=1, seed=sp.seed if sp.n == 1 or sp.seed is None else sp.seed + i,
                                          output_kind="final_only")
                request = engine.add_request(ids, one)
                by_id[request.request_id] = RequestOutput(request.request_id, ids)
                outputs.append(by_id[request.request_id])
        try:
            while engine.has_unfinished_requests():
                for delta in engine.step():
                    by_id[delta.request_id].add(delta)
        except BaseException:
            for request_id in list(by_id):
                engine.abort_request(request_id)
            raise
        return outputs

    def chat(self, messages: list[dict], params: SamplingParams | None = None, **template_kwargs) -> RequestOutput:
        ids = self._engine().tokenizer.encode_chat(messages, add_generation_prompt=True, **template_kwargs)
        return self.generate([ids], params)[0]

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def _engine(self) -> LLMEngine:
        if self.engine is None:
            raise RuntimeError("this LLM is closed")
        return self.engine

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # a finalizer must not raise, whatever close() met
            self.close()
