"""OllamaFormatter: the chunks and the final object of a native answer, /api/generate (`response`) or /api/chat
(`message`), with Ollama's counts, durations and `context`."""

from __future__ import annotations

from typing import Any

from velollm.api.context_answer import answer_context_ids, answer_logprob_count
from velollm.api.generation import ChoiceState
from velollm.api.handler import Call
from velollm.api.logprobs import LogprobFormatter
from velollm.api.text_offsets import TextOffsets
from velollm.outputs import RequestDelta
from velollm.wire.ollama_answer import ollama_answer


def _ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


class OllamaFormatter:
    """Chunks and the final object of /api/generate (`response`) or /api/chat (`message`)."""

    def __init__(self, model: str, chat: bool, call: Call, t_loaded: float, prompt_ids: list[int],
                 return_context: bool, logprobs: LogprobFormatter | None,
                 context_ids: list[int] | None = None, end_ids: frozenset[int] = frozenset(),
                 tokenizer: Any = None) -> None:
        self.model = model
        self.chat = chat
        self.call = call
        self.t_loaded = t_loaded
        self.prompt_ids = prompt_ids
        self.return_context = return_context
        self.logprobs = logprobs
        # The `context` returned is the whole prompt (before truncation) and the answer, as Ollama's: the
        # next call then cuts the same ids (id_window) and its prompt extends this one's.
        self.context_ids = prompt_ids if context_ids is None else context_ids
        # The ids that end an answer (EOS, stop_token_ids), and the tokenizer that finds a stop string's tokens:
        # what ended the answer is left out of `context` (velollm/api/context_answer.py), as in Ollama's.
        self.end_ids = end_ids
        self.tokenizer = tokenizer
        # Streamed logprobs go out with the text of their tokens, as Ollama's runner flushes them with its pending
        # pieces: those of tokens whose text is still held back (a stop string's possible start) wait here, with
        # where their text starts (velollm/api/text_offsets.py), until the text sent reaches it.
        self._offsets: TextOffsets | None = None
        self._pending: list[tuple[int, dict[str, Any]]] = []
        self._num_chars_sent = 0
        self._num_sent = 0

    def _body(self, text: str, tool_calls: list[dict[str, Any]] | None = None, thinking: str = "") -> dict[str, Any]:
        return ollama_answer(self.model, self.chat, text, thinking, tool_calls)

    def chunk(self, delta: RequestDelta, tool_calls: list[dict[str, Any]] | None = None,
              choice: ChoiceState | None = None) -> dict[str, Any] | None:
        """`tool_calls`: whole calls (arguments as objects) that completed with this delta, as Ollama streams them.
        `choice`: the answer so far, which the last delta's logprobs are cut to (`answer_logprob_count`)."""
        if self.logprobs and delta.token_ids:
            if self._offsets is None:
                self._offsets = TextOffsets(self.logprobs.tokenizer)
            entries = self.logprobs.chat_entries(delta.token_ids, delta.logprobs or [])
            self._pending += zip(self._offsets.offsets(delta.token_ids), entries)
        self._num_chars_sent += len(delta.text) + len(delta.reasoning)
        if delta.finished:  # the rest, less what ended the answer
            num_ready = len(self._pending) if choice is None else \
                max(0, answer_logprob_count(choice, self.end_ids, self.tokenizer) - self._num_sent)
        else:
            num_ready = next((i for i, (start, _) in enumerate(self._pending) if start >= self._num_chars_sent),
                             len(self._pending))
        ready = [entry for _, entry in self._pending[:num_ready]]
        self._pending = [] if delta.finished else self._pending[num_ready:]
        if not delta.text and not delta.reasoning and not tool_calls and not ready:
            return None
        out = self._body(delta.text, tool_calls, delta.reasoning)
        out["done"] = False
        if ready:
            out["logprobs"] = ready
            self._num_sent += len(ready)
        return out

    def final(self, choice: ChoiceState, text: str = "", with_logprobs: bool = False,
              tool_calls: list[dict[str, Any]] | None = None, thinking: str = "") -> dict[str, Any]:
        out = self._body(text, tool_calls, thinking)
        out["done"] = True
        # Ollama says "stop" for answers with tool calls too (it has no "tool_calls" reason).
        out["done_reason"] = "length" if choice.finish_reason == "length" else "stop"
        if self.return_context:
            out["context"] = self.context_ids + answer_context_ids(choice, self.end_ids, self.tokenizer)
        t_first = choice.t_first or self.t_loaded
        out.update(total_duration=_ns(self.call.elapsed()), load_duration=_ns(self.t_loaded - self.call.t0),
                   prompt_eval_count=_prompt_eval_count(choice, self.prompt_ids),
                   prompt_eval_duration=_ns(t_first - self.t_loaded),
                   eval_count=len(choice.token_ids), eval_duration=_ns((choice.t_last or t_first) - t_first))
        if with_logprobs and self.logprobs:
            kept = answer_logprob_count(choice, self.end_ids, self.tokenizer)
            out["logprobs"] = self.logprobs.chat_entries(choice.token_ids[:kept], choice.logprobs[:kept])
        return out


def _prompt_eval_count(choice: ChoiceState, prompt_ids: list[int]) -> int:
    """The prompt the answer came from: a tool-call retry's when it retried (velollm.api.openai_format.usage)."""
    return len(prompt_ids) if choice.num_prompt_tokens is None else choice.num_prompt_tokens
