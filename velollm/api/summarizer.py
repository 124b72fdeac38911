"""ModelSummarizer: the served model summarises the oldest turns of a chat for `compress` (once per
conversation prefix: the summary is cached by the hash of what it summarises)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from velollm.api.generation import EngineCall, GenerationStream, engine_params
from velollm.context.summary import INSTRUCTION, summary_key, transcript
from velollm.context.text_memo import TextMemo
from velollm.sampling_params import SamplingParams

logger = logging.getLogger(__name__)
CHARS_PER_TOKEN = 3  # a safe floor for clipping the transcript before it is tokenized


class ModelSummarizer:
    def __init__(self, engine: Any, cache: TextMemo) -> None:
        self.engine = engine
        self.cache = cache

    def cached(self, messages: list[Mapping[str, Any]]) -> str | None:
        return self.cache.get(summary_key(messages))

    async def summarize(self, messages: list[Mapping[str, Any]], context_len: int, max_tokens: int) -> str:
        key = summary_key(messages)
        summary = self.cache.get(key)
        if summary is None:
            summary = await self._generate(messages, context_len, max_tokens)
            self.cache.put(key, summary)
        return summary

    async def _generate(self, messages: list[Mapping[str, Any]], context_len: int, max_tokens: int) -> str:
        tokenizer = self.engine.tokenizer
        room = context_len - max_tokens - 64
        max_chars = room * CHARS_PER_TOKEN
        while True:
            chat = [{"role": "system", "content": INSTRUCTION},
                    {"role": "user", "content": transcript(messages, max_chars)}]
            ids = await asyncio.to_thread(tokenizer.encode_chat, chat)
            if len(ids) <= room or max_chars < 400:
                break
            max_chars = max_chars * room // len(ids) - 100
        params = engine_params(SamplingParams(temperature=0.0, max_tokens=max_tokens), max_tokens, stream=False)
        gen = GenerationStream(self.engine, [EngineCall(ids[: context_len - max_tokens], params)],
                               f"summary-{uuid.uuid4().hex}")
        try:
            await gen.start()
            [choice] = await gen.collect()
        finally:
            await gen.aclose()
        logger.info("summarised %d messages (%d prompt tokens) in %d tokens", len(messages), len(ids),
                    len(choice.token_ids))
        return choice.text
