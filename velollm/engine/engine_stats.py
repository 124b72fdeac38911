"""What an engine reports: its counters (`EngineStats`) and how it was built (`EngineSettings`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineStats:
    num_running: int
    num_waiting: int
    num_total_blocks: int
    num_free_blocks: int
    num_allocated_blocks: int
    kv_cache_usage: float
    prefix_cache_queries: int
    prefix_cache_hits: int
    num_aborted: int
    num_prompt_tokens: int
    num_generation_tokens: int
    num_preemptions: int
    num_steps: int
    num_turn_prefills: int = 0  # background prefills done (LLMEngine.add_prefill)
    num_turn_prefill_tokens: int = 0  # prompt tokens they computed
    num_dropped_turn_prefills: int = 0  # dropped: no free blocks, a failed step, or more queued than kept


@dataclass(frozen=True)
class EngineSettings:
    """How the engine was built (what /metrics reports and `velollm optimize --check` compares)."""

    device: str
    dtype: str
    max_num_seqs: int
    max_model_len: int
    kv_cache_bytes: int
    cuda_graphs: bool
    kv_cache_dtype: str | None = None  # what the KV cache stores (float8_e4m3fn for fp8); None: the model dtype
    async_scheduling: bool = False  # step N+1 scheduled while step N runs
