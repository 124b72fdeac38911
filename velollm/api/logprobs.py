"""Engine logprobs (per token: token id -> logprob, top-k plus the sampled token) -> wire formats."""

from __future__ import annotations

import math
from typing import Any

# JSON has no -inf; vLLM reports this floor instead.
_FLOOR = -9999.0


def _lp(value: float | None) -> float:
    return _FLOOR if value is None or math.isinf(value) or math.isnan(value) else float(value)


class LogprobFormatter:
    """Turns token ids into token strings once per request (decode caches nothing across requests)."""

    def __init__(self, tokenizer: Any, top_n: int) -> None:
        self.tokenizer = tokenizer
        self.top_n = top_n
        self._text: dict[int, str] = {}

    def token(self, token_id: int) -> str:
        text = self._text.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            self._text[token_id] = text
        return text

    def _top(self, lps: dict[int, float]) -> list[tuple[int, float]]:
        return sorted(lps.items(), key=lambda kv: kv[1], reverse=True)[: self.top_n]

    def chat_entries(self, token_ids: list[int], logprobs: list[dict[int, float]]) -> list[dict[str, Any]]:
        """OpenAI chat `logprobs.content` items (Ollama's native `logprobs` uses the same shape)."""
        entries = []
        for token_id, lps in zip(token_ids, logprobs):
            token = self.token(token_id)
            entries.append({
                "token": token, "logprob": _lp(lps.get(token_id)), "bytes": list(token.encode()),
                "top_logprobs": [{"token": (t := self.token(i)), "logprob": _lp(v), "bytes": list(t.encode())}
                                 for i, v in self._top(lps)],
            })
        return entries

    def completion(self, token_ids: list[int], logprobs: list[dict[int, float]], offset: int) -> dict[str, Any]:
        """OpenAI completions `logprobs` (tokens, token_logprobs, top_logprobs, text_offset from `offset`)."""
        tokens, values, tops, offsets = [], [], [], []
        for token_id, lps in zip(token_ids, logprobs):
            token = self.token(token_id)
            tokens.append(token)
            values.append(_lp(lps.get(token_id)))
            tops.append({self.token(i): _lp(v) for i, v in self._top(lps)})
            offsets.append(offset)
            offset += len(token)
        return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}
