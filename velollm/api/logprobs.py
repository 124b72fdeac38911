"""Engine logprobs (per token: token id -> logprob, top-k plus the sampled token) -> wire formats."""

from __future__ import annotations

import math
import re
from typing import Any

from velollm.outputs import PromptLogprobs

# JSON has no -inf; vLLM reports this floor instead.
_FLOOR = -9999.0
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # a SentencePiece byte-fallback token


def _byte_level_table() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet (Llama 3, Qwen, ...): the character that spells each byte in a vocabulary."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


_BYTE_OF_CHAR = _byte_level_table()


def raw_token_bytes(piece: str | None) -> bytes | None:
    """The bytes a vocabulary entry stands for, when it is spelled in bytes (byte-level BPE, byte fallback)."""
    if piece is None:
        return None
    match = _BYTE_TOKEN.fullmatch(piece)
    if match:
        return bytes([int(match.group(1), 16)])
    if piece and all(c in _BYTE_OF_CHAR for c in piece):
        return bytes(_BYTE_OF_CHAR[c] for c in piece)
    return None


def _lp(value: float | None) -> float:
    return _FLOOR if value is None or math.isinf(value) or math.isnan(value) else float(value)


class LogprobFormatter:
    """Turns token ids into token strings once per request (decode caches nothing across requests)."""

    def __init__(self, tokenizer: Any, top_n: int, tokens_as_ids: bool = False) -> None:
        """`tokens_as_ids`: vLLM's return_tokens_as_token_ids, each logprob's token spelt "token_id:N" (a token
        that is no whole character, or a special one, stays tellable); `bytes` keep the token's own bytes."""
        self.tokenizer = tokenizer
        self.top_n = top_n
        self.tokens_as_ids = tokens_as_ids
        self._text: dict[int, str] = {}

    def label(self, token_id: int) -> str:
        """A logprob entry's token: its text, or vLLM's "token_id:N" when asked."""
        return f"token_id:{token_id}" if self.tokens_as_ids else self.token(token_id)

    def token(self, token_id: int) -> str:
        text = self._text.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            self._text[token_id] = text
        return text

    def token_bytes(self, token_id: int) -> list[int]:
        """The token's own bytes (OpenAI's `bytes`, which clients join to rebuild characters split across
        tokens): a token holding part of a character decodes alone to U+FFFD, whose UTF-8 (EF BF BD) it was."""
        text = self.token(token_id)
        if "\ufffd" in text:
            raw = raw_token_bytes(self.tokenizer.id_to_token(token_id))
            if raw is not None:
                return list(raw)
        return list(text.encode())

    def _top(self, lps: dict[int, float]) -> list[tuple[int, float]]:
        return sorted(lps.items(), key=lambda kv: kv[1], reverse=True)[: self.top_n]

    def chat_entries(self, token_ids: list[int], logprobs: list[dict[int, float]]) -> list[dict[str, Any]]:
        """OpenAI chat `logprobs.content` items (Ollama's native `logprobs` uses the same shape)."""
        entries = []
        for token_id, lps in zip(token_ids, logprobs):
            entries.append({
                "token": self.label(token_id), "logprob": _lp(lps.get(token_id)), "bytes": self.token_bytes(token_id),
                "top_logprobs": [{"token": self.label(i), "logprob": _lp(v), "bytes": self.token_bytes(i)}
                                 for i, v in self._top(lps)],
            })
        return entries

    def completion(self, token_ids: list[int], logprobs: list[dict[int, float] | None], offsets: list[int]
                   ) -> dict[str, Any]:
        """OpenAI completions `logprobs` (tokens, token_logprobs, top_logprobs, and `offsets` as text_offset:
        velollm/api/text_offsets.py, as a token's own text cannot tell where a split character starts). A None
        entry (an echoed prompt's first token, which has no context) is null in token_logprobs and top_logprobs."""
        tokens, values, tops = [], [], []
        for token_id, lps in zip(token_ids, logprobs):
            tokens.append(self.label(token_id))
            values.append(None if lps is None else _lp(lps.get(token_id)))
            tops.append(None if lps is None else self._top_by_text(lps, token_id))
        return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops,
                "text_offset": list(offsets[:len(tokens)])}

    def _top_by_text(self, lps: dict[int, float], token_id: int) -> dict[str, float]:
        """The top ids keyed by their text, then the token itself, as OpenAI's legacy format has it ("the logprob
        of the sampled token, so there may be up to logprobs+1 elements"; vLLM's too): a client reads the
        chosen token's entry there. Ids of one text (pieces of characters all decode to U+FFFD) keep the best
        logprob, so the dict's max is the top token's (lm-evaluation-harness's is_greedy reads it)."""
        top: dict[str, float] = {}
        for i, v in self._top(lps):
            top.setdefault(self.label(i), _lp(v))
        if token_id in lps:
            top.setdefault(self.label(token_id), _lp(lps[token_id]))
        return top

    def vllm_prompt(self, prompt: PromptLogprobs, k: int) -> list[dict[str, dict[str, Any]] | None]:
        """vLLM's `prompt_logprobs`: per prompt token None (the first) or token id -> {logprob, rank,
        decoded_token}, for the prompt token and the top `k`."""
        out: list[dict[str, dict[str, Any]] | None] = []
        for token_id, lps, rank in zip(prompt.token_ids, prompt.logprobs, prompt.ranks):
            if lps is None or rank is None:
                out.append(None)
                continue
            entry = {str(token_id): self._vllm_entry(token_id, lps[token_id], rank)}
            top = sorted(lps.items(), key=lambda kv: kv[1], reverse=True)[:k]
            for top_rank, (i, v) in enumerate(top, 1):
                entry.setdefault(str(i), self._vllm_entry(i, v, top_rank))
            out.append(entry)
        return out

    def _vllm_entry(self, token_id: int, logprob: float, rank: int) -> dict[str, Any]:
        return {"logprob": _lp(logprob), "rank": rank, "decoded_token": self.token(token_id)}
