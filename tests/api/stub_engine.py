"""A tiny stand-in for AsyncEngine, for the API unit tests only (never used outside tests/api).

Byte-level tokenizer (id = byte + 3; 1 = BOS, 2 = EOS). Output is a deterministic function of the
prompt, position and seed, so greedy runs repeat exactly; it tracks "blocks" and aborts like the
real engine must.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from velollm.config import ModelConfig
from velollm.engine.engine_stats import EngineSettings
from velollm.engine.loader.source import ModelInfo
from velollm.errors import ContextOverflow, Overloaded
from velollm.outputs import RequestDelta
from velollm.sampling_params import SamplingParams

BOS, EOS, OFFSET = 1, 2, 3


class StubTokenizer:
    vocab_size = 256 + OFFSET
    bos_token_id = BOS
    eos_token_ids = frozenset({EOS})
    byte_fallback_ids: frozenset[int] = frozenset()  # what the engine's detokenizer asks (api/text_offsets.py)
    chat_template = "{{ stub }}"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return ([BOS] if add_special_tokens else []) + [b + OFFSET for b in text.encode()]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return bytes(i - OFFSET for i in ids if OFFSET <= i < self.vocab_size).decode(errors="replace")

    def apply_chat_template(self, messages, *, tools=None, add_generation_prompt=True, **kw) -> str:
        if any(m["role"] == "boom" for m in messages):
            raise RuntimeError("template exploded")
        text = "".join(f"<{m['role']}>{m['content']}\n" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    def encode_chat(self, messages, *, tools=None, add_generation_prompt=True, **kw) -> list[int]:
        return self.encode(self.apply_chat_template(messages, tools=tools, add_generation_prompt=add_generation_prompt))


@dataclass
class StubStats:
    num_running: int = 0
    num_waiting: int = 0
    num_total_blocks: int = 1024
    num_free_blocks: int = 1024
    num_allocated_blocks: int = 0
    kv_cache_usage: float = 0.0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    num_aborted: int = 0
    num_prompt_tokens: int = 0
    num_generation_tokens: int = 0
    num_preemptions: int = 0
    num_steps: int = 0
    num_turn_prefills: int = 0  # EngineStats' background prefills: a stub never runs one
    num_turn_prefill_tokens: int = 0
    num_dropped_turn_prefills: int = 0


@dataclass
class StubSource:
    info: ModelInfo


class StubEngine:
    """Implements the AsyncEngine contract the API uses."""

    def __init__(self, max_model_len: int = 256, max_running: int = 64, max_queue: int = 512,
                 token_delay_s: float = 0.001) -> None:
        self.tokenizer = StubTokenizer()
        self.max_model_len = max_model_len
        self.max_running = max_running
        self.max_queue = max_queue
        self.token_delay_s = token_delay_s
        self.model_config = ModelConfig(architecture="LlamaForCausalLM", model_type="llama", vocab_size=259,
                                        hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                        max_position_embeddings=max_model_len)
        self.source = StubSource(ModelInfo(name="stub", format="safetensors", family="llama", parameter_count=123456,
                                           quantization_level="F32", size_bytes=493824, digest="ab" * 32,
                                           modified_at=1700000000.0, default_options={"stop": ["<stop>"]}))
        self._stats = StubStats()
        self.started = self.stopped = False
        self.seen_params: list[SamplingParams] = []
        self.seen_prompts: list[list[int]] = []
        self.prefix_caching = False  # AsyncEngine's: off, no background prefill is prepared for the stub
        self.prefilled: list[list[int]] = []
        self._slots = asyncio.Semaphore(max_running)

    def start(self) -> None:
        self.started = True

    def shutdown(self) -> None:
        self.stopped = True

    def settings(self) -> EngineSettings:
        return EngineSettings("cpu", "float32", self.max_running, self.max_model_len,
                              self._stats.num_total_blocks * 16 * 64, False)

    def stats(self) -> StubStats:
        s = self._stats
        s.num_free_blocks = s.num_total_blocks - s.num_allocated_blocks
        s.kv_cache_usage = s.num_allocated_blocks / s.num_total_blocks
        return s

    def abort(self, request_id: str) -> None:
        pass

    def prefill(self, prompt_token_ids: list[int], counted: bool = True) -> None:
        self.prefilled.append(list(prompt_token_ids))

    def _token(self, prompt: list[int], pos: int, rng: random.Random | None) -> int:
        letters = "abcdefghij klmnopqrstuvwxyz"
        if rng is None:
            return ord(letters[(sum(prompt) * 7 + pos * 3) % len(letters)]) + OFFSET
        return ord(rng.choice(letters)) + OFFSET

    async def generate(self, prompt_token_ids, params: SamplingParams, request_id=None):
        s = self._stats
        if len(prompt_token_ids) >= self.max_model_len:
            raise ContextOverflow("prompt too long for the stub", param="prompt")
        if s.num_waiting >= self.max_queue:
            raise Overloaded(f"{s.num_waiting} waiting")
        self.seen_params.append(params)
        self.seen_prompts.append(list(prompt_token_ids))
        blocks = -(-(len(prompt_token_ids) + params.max_tokens) // 16)
        finished = False
        s.num_waiting += 1
        try:
            async with self._slots:
                s.num_waiting -= 1
                s.num_running += 1
                s.num_allocated_blocks += blocks
                s.num_prompt_tokens += len(prompt_token_ids)
                try:
                    async for delta in self._deltas(prompt_token_ids, params, request_id):
                        finished = delta.finished
                        yield delta
                finally:
                    s.num_running -= 1
                    s.num_allocated_blocks -= blocks
        finally:
            if not finished:
                s.num_aborted += 1

    async def _deltas(self, prompt, params: SamplingParams, request_id):
        greedy = params.temperature == 0 or params.top_k == 1
        rng = None if greedy else random.Random(params.seed if params.seed is not None else random.random())
        # One character per token, so cutting at a stop string is cutting the token list.
        tokens = [self._token(prompt, pos, rng) for pos in range(params.max_tokens)]
        text = self.tokenizer.decode(tokens)
        finish, stop_reason = "length", None
        hits = [(text.index(stop), stop) for stop in params.stop if stop in text]
        if hits:
            cut, stop_reason = min(hits)
            tokens, finish = tokens[: cut + len(stop_reason)], "stop"
        for pos, token in enumerate(tokens):
            await asyncio.sleep(self.token_delay_s)
            self._stats.num_generation_tokens += 1
            last = pos + 1 == len(tokens)
            piece = "" if finish == "stop" and pos >= len(tokens) - len(stop_reason) else chr(token - OFFSET)
            logprobs = None
            if params.logprobs is not None:
                logprobs = [{token: -0.25, **{OFFSET + 65 + k: -2.0 - k for k in range(params.logprobs)}}]
            yield RequestDelta(request_id=request_id, text=piece, token_ids=[token], logprobs=logprobs,
                               finish_reason=finish if last else None, stop_reason=stop_reason if last else None,
                               num_prompt_tokens=len(prompt), num_output_tokens=pos + 1)
