"""LLMEngine: requests in, deltas out; step() = schedule -> run -> update (with async scheduling, step N+1 is
launched before step N's sampled ids are read: see _step_async)."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading

import torch

from velollm.config import EngineConfig, KernelSwitches, SchedulerConfig
from velollm.engine.block_manager import BlockManager
from velollm.engine.device import device_scope, resolve_device, resolve_dtype
from velollm.engine.engine_stats import EngineSettings, EngineStats
from velollm.engine.loader.source import ModelSource
from velollm.engine.model_runner import ModelRunner
from velollm.engine.output_processor import OutputProcessor
from velollm.engine.penalties import has_penalties
from velollm.engine.placeholders import LaunchedStep
from velollm.engine.request import Request
from velollm.engine.request_limits import RequestLimits
from velollm.engine.sampler import SampledTokens, Sampler
from velollm.engine.scheduler import ScheduledBatch, Scheduler
from velollm.engine.step_failures import StepFailures
from velollm.errors import InvalidRequest
from velollm.outputs import RequestDelta
from velollm.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


class LLMEngine:
    def __init__(self, source: ModelSource, config: EngineConfig = EngineConfig()) -> None:
        config = _with_kernel_switches(config)
        self.config = config
        torch_device = resolve_device(config.device)
        model_config = source.config.replace(dtype=resolve_dtype(config.dtype, source.config.dtype, torch_device))
        self.source = dataclasses.replace(source, config=model_config)
        self.model_config = model_config
        self.tokenizer = source.load_tokenizer()
        limit = model_config.max_position_embeddings
        wanted_len = min(config.max_model_len or limit, limit)
        cache_config = config.cache_config()
        with device_scope(torch_device):  # kernels compile, run and are captured on the engine's device
            self.runner = ModelRunner(self.source, torch_device, cache_config, config.max_num_seqs, wanted_len,
                                      profile_tokens=config.batched_tokens(wanted_len),
                                      enforce_eager=config.enforce_eager, switches=config.kernel_switches)
        capacity = self.runner.num_blocks * cache_config.block_size
        if wanted_len > capacity:
            logger.warning("max_model_len %d exceeds the KV cache (%d tokens); using %d", wanted_len, capacity, capacity)
        self.max_model_len = min(wanted_len, capacity)
        self.tokenizer.max_input_tokens = self.max_model_len
        self.limits = RequestLimits(model_config.vocab_size, self.max_model_len)
        self.block_manager = BlockManager(self.runner.num_blocks, cache_config.block_size, config.enable_prefix_caching)
        scheduler_config = SchedulerConfig(config.max_num_seqs, config.batched_tokens(self.max_model_len),
                                           self.max_model_len)
        self.scheduler = Scheduler(scheduler_config, self.block_manager)
        self.eos_token_ids = frozenset(model_config.eos_token_ids) | self.tokenizer.eos_token_ids
        self.sampler = Sampler(model_config.vocab_size, self.eos_token_ids)
        self.outputs = OutputProcessor(self.tokenizer, self.eos_token_ids, self.max_model_len)
        self.device = torch_device
        self.requests: dict[str, Request] = {}
        self._structured = None
        self._structured_lock = threading.Lock()
        self._ids = itertools.count()
        self._in_flight: LaunchedStep | None = None  # async scheduling: launched, its ids not read yet
        self.num_aborted = self.num_prompt_tokens = self.num_generation_tokens = self.num_steps = 0
        self.failures = StepFailures(self.scheduler, self.outputs, self.requests, self.runner)
        if config.async_scheduling:
            logger.info("async scheduling: each step is scheduled while the previous one runs")

    @classmethod
    def from_model(cls, model: str, config: EngineConfig = EngineConfig(), *, cache_dir: str | None = None,
                   allow_paths: bool = True) -> LLMEngine:
        """Resolve a model specifier (demo, path, Ollama name, HF repo id) and build the engine.

        `cache_dir` is where `demo` is generated (default ~/.cache/velollm); `allow_paths=False` refuses
        filesystem paths (a name a network client chose).
        """
        from velollm.engine.loader.resolve import resolve_model

        config = _with_kernel_switches(config).replace(device=str(resolve_device(config.device)))
        source = resolve_model(model, dtype=None if config.dtype == "auto" else config.dtype, cache_dir=cache_dir,
                               device=config.device, allow_paths=allow_paths, quantization=config.quantization)
        return cls(source, config)

    def add_request(self, prompt_token_ids: list[int], params: SamplingParams, request_id: str | None = None) -> Request:
        request_id = request_id or f"req-{next(self._ids)}"
        if request_id in self.requests:
            raise InvalidRequest(f"request id {request_id!r} is already running", param="request_id")
        self.limits.validate(prompt_token_ids, params)
        generator = None
        if params.seed is not None:
            generator = torch.Generator(self.device).manual_seed(params.seed)
        request = Request(request_id, list(prompt_token_ids), params, generator=generator)
        if params.structured_output is not None:
            budget = self.limits.output_budget(len(prompt_token_ids), params)
            request.grammar = self.structured_output.new_matcher(params.structured_output, max_tokens=budget)
        self.requests[request_id] = request
        self.outputs.add(request)
        self.scheduler.add(request)
        return request

    def add_prefill(self, prompt_token_ids: list[int], counted: bool = True) -> Request | None:
        """A background prefill: the prompt's full blocks computed into the prefix cache while the engine is
        idle, for a request expected to start with them (the next turn of a chat; `counted` False: a request whose
        grammar compiles, not counted in the turn-prefill stats); nothing is sampled or returned. None when there
        is no prefix cache to fill or the prompt is not one the engine would run."""
        if not self.block_manager.enable_prefix_caching or len(prompt_token_ids) < self.block_manager.block_size:
            return None
        request_id = f"prefill-{next(self._ids)}"
        params = SamplingParams(max_tokens=1)
        try:
            self.limits.validate(prompt_token_ids, params)
        except InvalidRequest:
            return None
        request = Request(request_id, list(prompt_token_ids), params, counted=counted)
        self.scheduler.add_prefill(request)  # the scheduler alone holds it (not in `requests`: nothing streams)
        return request

    @property
    def structured_output(self):
        """The grammar backend (xgrammar), built on the first constrained request."""
        with self._structured_lock:
            if self._structured is None:
                from velollm.engine.text.structured_output import StructuredOutputManager

                self._structured = StructuredOutputManager(self.tokenizer, self.model_config.vocab_size,
                                                           stop_token_ids=self.eos_token_ids)
            return self._structured

    def abort_request(self, request_id: str) -> RequestDelta | None:
        request = self.requests.pop(request_id, None) or self.scheduler.find_prefill(request_id)
        if request is None:
            return None
        self.scheduler.finish(request)
        if request.prefill_only:
            return None
        self.num_aborted += 1
        delta = self.outputs.delta(request, finish_reason="abort")
        self.outputs.remove(request_id)
        return delta

    def abort_prefills(self) -> None:
        """Every background prefill dropped, its blocks freed (the full ones stay cached)."""
        for request in list(self.scheduler.prefills):
            self.scheduler.finish(request)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished() or self._in_flight is not None

    def step(self) -> list[RequestDelta]:
        """One step. A failure is pinned on one request: a batch that fails is rolled back and its requests
        are retried alone; the one that fails alone is removed and raised as RequestFailed."""
        with device_scope(self.device):  # Triton and CUDA graphs run on the current device (cuda:N)
            if self.config.async_scheduling:
                return self._step_async()
            return self._step_sync()

    def _step_sync(self) -> list[RequestDelta]:
        retrying = bool(self.scheduler.suspects)  # then the batch is one suspect, alone
        batch = self.scheduler.schedule()
        if not batch.requests:
            return []
        try:
            launched = self._launch(batch)
            deltas = self._collect(launched)
        except Exception as exc:  # noqa: BLE001 (a failed step is contained: step_failures decides)
            self.failures.contain(batch, exc, retrying=retrying)
            return []
        self.failures.ran()
        self.scheduler.cleared(batch, sampled=launched.sampled is not None)
        return deltas

    def _step_async(self) -> list[RequestDelta]:
        """vLLM V1's async scheduling: step N+1 is scheduled and launched before step N's ids are read, so the
        host's work (scheduling, inputs, detokenizing, stop checks) overlaps the device's. Rows of requests
        that step N ends are wasted in N+1 and dropped when read. Each call returns the previous step's deltas."""
        previous = self._in_flight
        if previous is None and self.scheduler.suspects:
            return self._step_sync()  # retrying a failed step's requests alone pins the failure on one
        overlap = previous is None or self._overlaps(previous)
        # Without overlap this call only reads `previous`: the next one schedules with every id on the host.
        batch = self.scheduler.schedule() if overlap else ScheduledBatch()
        self._in_flight = None
        try:
            launched = self._launch(batch, previous) if batch.requests else None
            deltas = self._collect(previous) if previous is not None else []
        except Exception as exc:  # noqa: BLE001 (a failed step is contained: step_failures decides)
            self.failures.abandon([previous.batch if previous is not None else ScheduledBatch(), batch], exc)
            return []
        if launched is not None or previous is not None:
            self.failures.ran()
        self._in_flight = launched
        return deltas

    def _overlaps(self, previous: LaunchedStep) -> bool:
        """Whether the next step may be scheduled before `previous`'s ids are read: not when a request it
        sampled needs its ids on the host to sample again (grammar state, penalties over the output), nor
        while a failed step's requests are retried."""
        if self.scheduler.suspects:
            return False
        return not any(r.grammar is not None or has_penalties(r.params) for r in previous.requests)

    def _launch(self, batch: ScheduledBatch, previous: LaunchedStep | None = None) -> LaunchedStep:
        """Run the model and sample on the device; nothing is read back."""
        logits, rows, prompt_scores = self.runner.run(batch, previous.pending() if previous is not None else None)
        for scores in prompt_scores:
            batch.requests[scores.row].prompt_logprobs.extend(scores.logprobs, scores.ranks)
        requests = [batch.requests[row] for row in rows]
        sampled = self._sample(logits, requests) if rows else None
        self.scheduler.update(batch)
        self.num_steps += 1
        for request, num_new in zip(batch.requests, batch.num_scheduled_tokens):
            if request.num_computed_tokens <= request.num_prompt_tokens and not request.prefill_only:
                self.num_prompt_tokens += num_new
        for request in requests:
            request.num_placeholders += 1
        return LaunchedStep(batch, requests, sampled)

    def _sample(self, logits: torch.Tensor, requests: list[Request]) -> SampledTokens:
        apply_grammar = None
        if any(r.grammar is not None for r in requests):
            matchers = [r.grammar for r in requests]
            apply_grammar = lambda logits: self.structured_output.apply_masks(logits, matchers)
        return self.sampler.sample_on_device(logits, requests, apply_grammar)

    def _collect(self, launched: LaunchedStep) -> list[RequestDelta]:
        """Read the step's ids (the step's one host sync), append them and apply the stop conditions."""
        if launched.sampled is None:
            return []
        token_ids, logprobs = launched.sampled.to_host()
        deltas = []
        for request, token_id, token_logprobs in zip(launched.requests, token_ids, logprobs):
            if request.finished:  # ended (or aborted) after this step was launched: a wasted row
                continue
            request.num_placeholders -= 1
            self.outputs.append_token(request, token_id, token_logprobs)
            self.num_generation_tokens += 1
            deltas.append(self.outputs.delta(request))
            if request.finish_reason is not None:
                self.scheduler.finish(request)
                self.requests.pop(request.request_id, None)
                self.outputs.remove(request.request_id)
        return deltas

    def _abort_all(self) -> None:
        for request_id in list(self.requests):
            self.abort_request(request_id)
        self.abort_prefills()
        self._in_flight = None  # its rows all belong to aborted requests

    def stats(self) -> EngineStats:
        bm = self.block_manager
        return EngineStats(
            num_running=len(self.scheduler.running),
            num_waiting=len(self.scheduler.waiting),
            num_total_blocks=bm.num_blocks,
            num_free_blocks=bm.num_free_blocks,
            num_allocated_blocks=bm.num_allocated_blocks,
            kv_cache_usage=bm.usage(),
            prefix_cache_queries=bm.prefix_cache_queries,
            prefix_cache_hits=bm.prefix_cache_hits,
            num_aborted=self.num_aborted,
            num_prompt_tokens=self.num_prompt_tokens,
            num_generation_tokens=self.num_generation_tokens,
            num_preemptions=self.scheduler.num_preemptions,
            num_steps=self.num_steps,
            num_turn_prefills=self.scheduler.num_prefills,
            num_turn_prefill_tokens=self.scheduler.num_prefill_tokens,
            num_dropped_turn_prefills=self.scheduler.num_dropped_prefills,
        )

    def settings(self) -> EngineSettings:
        r = self.runner
        return EngineSettings(str(self.device), self.model_config.dtype, self.scheduler.config.max_num_seqs,
                              self.max_model_len, r.kv_cache_bytes(), r.graphs is not None,
                              str(r.kv_dtype).removeprefix("torch."), self.config.async_scheduling)

    def memory_bytes(self) -> int:
        """What the loaded model holds on its device: the weights as held (GGUF planes when kept
        quantized) and the KV cache (what Ollama's /api/ps reports as size)."""
        return self.runner.weight_bytes + self.runner.kv_cache_bytes()

    def sleep(self) -> None:
        """Like vLLM's sleep mode level 1 on a CPU engine: requests aborted, KV cache released, weights kept
        (in host memory), so `wake()` is much faster than building the engine again."""
        self._abort_all()
        self.runner.release()

    def wake(self) -> None:
        with device_scope(self.device):  # the decode graphs are captured again
            self.runner.reacquire()
        self.block_manager.reset()

    def close(self) -> None:
        self._abort_all()
        self.runner.release()
        self.tokenizer.close()


def _with_kernel_switches(config: EngineConfig) -> EngineConfig:
    """`config` with its kernel switches, from $VELOLLM_* when the caller set none (read once, before loading:
    a bad value stops the engine here)."""
    if config.kernel_switches is not None:
        return config
    return config.replace(kernel_switches=KernelSwitches.from_env())

