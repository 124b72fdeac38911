"""OpenAI response bodies: chat.completion(.chunk) and text_completion, usage, logprobs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from velollm.api.generation import ChoiceState
from velollm.api.logprobs import LogprobFormatter
from velollm.api.text_offsets import TextOffsets
from velollm.outputs import PromptLogprobs, RequestDelta
from velollm.wire import legacy_functions

if TYPE_CHECKING:
    from velollm.api.tool_calls import ToolAnswer


def usage(prompt_lens: list[int], choices: list[ChoiceState], reasoning: bool = False) -> dict[str, Any]:
    """prompt_tokens counts each distinct prompt an answer came from once (n choices share it), as OpenAI
    and vLLM do: a choice whose answer is a tool-call retry's counts the retry's prompt (longer: the
    request's prompt, the failed answer and the corrective message), and the request's prompt counts when
    some answer came from it. completion_tokens counts the answers returned.

    Choices are ordered prompt by prompt, n per prompt. `reasoning` (a thinking model): the
    completion tokens that were thinking, as `completion_tokens_details.reasoning_tokens`.
    """
    n = max(1, len(choices) // max(1, len(prompt_lens)))
    prompt = sum(_prompt_tokens(length, choices[i * n:(i + 1) * n]) for i, length in enumerate(prompt_lens))
    completion = sum(len(c.token_ids) for c in choices)
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion}
    if reasoning:
        out["completion_tokens_details"] = {"reasoning_tokens": sum(c.num_reasoning_tokens for c in choices)}
    cached = sum(c.num_cached_tokens for c in choices[::n])
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def _prompt_tokens(prompt_len: int, choices: list[ChoiceState]) -> int:
    retried = [c.num_prompt_tokens for c in choices if c.num_prompt_tokens is not None]
    return (prompt_len if len(retried) < len(choices) or not choices else 0) + sum(retried)


class _Base:
    object_name = ""
    chunk_object_name = ""
    reasoning = False  # a thinking model's answer: usage counts reasoning tokens

    def __init__(self, request_id: str, model: str, created: int, tokenizer: Any, top_n: int,
                 include_usage: bool, continuous_usage: bool, prompt_lens: list[int], tokens_as_ids: bool = False
                 ) -> None:
        self.request_id = request_id
        self.model = model
        self.created = created
        self.logprobs = LogprobFormatter(tokenizer, top_n, tokens_as_ids)
        self.include_usage = include_usage
        self.continuous_usage = continuous_usage
        self.prompt_lens = prompt_lens

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.request_id, "object": obj, "created": self.created, "model": self.model,
                "choices": choices}

    def chunk(self, choices: list[dict[str, Any]], states: list[ChoiceState]) -> dict[str, Any]:
        out = self._envelope(self.chunk_object_name, choices)
        if self.continuous_usage:
            out["usage"] = usage(self.prompt_lens, states, self.reasoning)
        return out

    def usage_chunk(self, states: list[ChoiceState]) -> dict[str, Any]:
        return {**self._envelope(self.chunk_object_name, []), "usage": usage(self.prompt_lens, states, self.reasoning)}


class ChatFormatter(_Base):
    object_name = "chat.completion"
    chunk_object_name = "chat.completion.chunk"

    def __init__(self, *args: Any, want_logprobs: bool, reasoning: bool = False, legacy_functions: bool = False,
                 prompt_logprobs: int | None = None, echo: str = "", **kw: Any) -> None:
        """`legacy_functions`: the request sent the deprecated `functions`; its call is answered as
        `function_call` (velollm.wire.legacy_functions). `prompt_logprobs`: vLLM's extra, the response's
        `prompt_logprobs` with the top k (whole answers only). `echo`: vLLM's, the text each choice's content
        starts with (the continued last message)."""
        super().__init__(*args, **kw)
        self.prompt_logprobs = prompt_logprobs
        self.echo = echo
        self.want_logprobs = want_logprobs
        self.reasoning = reasoning
        self.legacy_functions = legacy_functions
        self._started: set[int] = set()

    def _logprobs(self, token_ids: list[int], lps: list[dict[int, float]] | None) -> dict[str, Any] | None:
        if not self.want_logprobs:
            return None
        return {"content": self.logprobs.chat_entries(token_ids, lps or [])}

    def response(self, states: list[ChoiceState], answers: list[ToolAnswer] | None = None) -> dict[str, Any]:
        """`answers`: the parsed tool calls per choice, when the request carried tools."""
        choices = []
        for c in states:
            message: dict[str, Any] = {"role": "assistant", "content": c.text}
            if c.reasoning:
                message["reasoning_content"] = c.reasoning  # vLLM's and DeepSeek's name
            finish_reason = c.finish_reason
            if answers is not None:
                a = answers[c.index]
                # OpenAI sends content null next to tool calls when the model wrote nothing else.
                message["content"] = a.content or (None if a.calls else "")
                if a.calls and self.legacy_functions:
                    message["function_call"] = a.calls[0].to_openai()["function"]
                elif a.calls:
                    message["tool_calls"] = [call.to_openai() for call in a.calls]
                finish_reason = a.finish_reason
            if self.legacy_functions:
                finish_reason = legacy_functions.finish_reason(finish_reason)
            if self.echo:
                message["content"] = self.echo + (message["content"] or "")
            choices.append({"index": c.index, "message": message, "logprobs": self._logprobs(c.token_ids, c.logprobs),
                            "finish_reason": finish_reason, "stop_reason": c.stop_reason})
        body = {**self._envelope(self.object_name, choices), "usage": usage(self.prompt_lens, states, self.reasoning),
                "system_fingerprint": None}
        if self.prompt_logprobs is not None:  # one prompt for every choice: on the response, as vLLM has it
            prompt = states[0].prompt_logprobs if states else None
            body["prompt_logprobs"] = None if prompt is None else self.logprobs.vllm_prompt(prompt, self.prompt_logprobs)
        return body

    def stream_chunks(self, index: int, delta: RequestDelta, states: list[ChoiceState],
                      tool_calls: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """`tool_calls`: OpenAI tool-call deltas parsed from this delta (id, type and name first)."""
        chunks = []
        if index not in self._started:
            self._started.add(index)
            chunks.append(self.chunk([{"index": index, "delta": {"role": "assistant", "content": self.echo},
                                       "logprobs": None, "finish_reason": None}], states))
        has_logprobs = self.want_logprobs and bool(delta.token_ids)
        if delta.text or delta.reasoning or has_logprobs or delta.finished or tool_calls:
            body: dict[str, Any] = {"reasoning_content": delta.reasoning} if delta.reasoning else {}
            if delta.text:
                body["content"] = delta.text
            finish_reason = delta.finish_reason
            if tool_calls and self.legacy_functions:
                function_call = legacy_functions.function_call_delta(tool_calls)
                if function_call is not None:
                    body["function_call"] = function_call
            elif tool_calls:
                body["tool_calls"] = tool_calls
            if self.legacy_functions:
                finish_reason = legacy_functions.finish_reason(finish_reason)
            choice: dict[str, Any] = {
                "index": index, "delta": body,
                "logprobs": self._logprobs(delta.token_ids, delta.logprobs) if has_logprobs else None,
                "finish_reason": finish_reason,
            }
            if delta.finished:
                choice["stop_reason"] = delta.stop_reason
            chunks.append(self.chunk([choice], states))
        return chunks


class CompletionFormatter(_Base):
    object_name = "text_completion"
    chunk_object_name = "text_completion"

    def __init__(self, *args: Any, want_logprobs: bool, echo_texts: list[str] | None, n: int,
                 skip_special_tokens: bool = True, prompt_logprobs: int | None = None, **kw: Any) -> None:
        """`prompt_logprobs`: vLLM's extra, each choice's `prompt_logprobs` with the top k (whole answers only)."""
        super().__init__(*args, **kw)
        self.want_logprobs = want_logprobs
        self.echo_texts = echo_texts
        self.n = n
        self.skip_special_tokens = skip_special_tokens
        self.prompt_logprobs = prompt_logprobs
        self._started: set[int] = set()  # choices whose first chunk (with the echo) is sent
        self._offsets: dict[int, TextOffsets] = {}

    def _echo(self, index: int) -> str:
        return self.echo_texts[index // self.n] if self.echo_texts else ""

    def _logprobs(self, index: int, token_ids: list[int], lps: list[dict[int, float]] | None,
                  prompt: PromptLogprobs | None):
        """The choice's logprobs from where the last call ended. With echo, the first call lists the prompt's
        tokens before the answer's, as vLLM does: offsets from 0 over the prompt's tokens, the answer's after."""
        if not self.want_logprobs:
            return None
        entries: list[dict[int, float] | None] = list(lps or [])
        offsets = self._offsets.get(index)
        echoed: list[int] = []  # the echoed prompt's offsets, into the echo from 0
        if offsets is None:
            offsets = self._offsets[index] = TextOffsets(self.logprobs.tokenizer, len(self._echo(index)),
                                                         self.skip_special_tokens)
            if self.echo_texts is not None and prompt is not None:
                echoed = TextOffsets(self.logprobs.tokenizer, 0, self.skip_special_tokens).offsets(prompt.token_ids)
                token_ids, entries = prompt.token_ids + token_ids, prompt.logprobs + entries
        return self.logprobs.completion(token_ids, entries, echoed + offsets.offsets(token_ids[len(echoed):]))

    def response(self, states: list[ChoiceState]) -> dict[str, Any]:
        choices = []
        for c in states:
            choice = {"index": c.index, "text": self._echo(c.index) + c.text,
                      "logprobs": self._logprobs(c.index, c.token_ids, c.logprobs, c.prompt_logprobs),
                      "finish_reason": c.finish_reason, "stop_reason": c.stop_reason}
            if self.prompt_logprobs is not None:
                choice["prompt_logprobs"] = self._vllm_prompt(c.prompt_logprobs)
            choices.append(choice)
        return {**self._envelope(self.object_name, choices), "usage": usage(self.prompt_lens, states),
                "system_fingerprint": None}

    def _vllm_prompt(self, prompt: PromptLogprobs | None) -> list[Any] | None:
        return None if prompt is None else self.logprobs.vllm_prompt(prompt, self.prompt_logprobs or 0)

    def stream_chunks(self, index: int, delta: RequestDelta, states: list[ChoiceState]) -> list[dict[str, Any]]:
        first = index not in self._started
        self._started.add(index)
        text = (self._echo(index) if first else "") + delta.text
        echoed = first and self.echo_texts is not None and delta.prompt_logprobs is not None
        logprobs = None
        if delta.token_ids or echoed:  # the first chunk of an echo carries the prompt's logprobs
            logprobs = self._logprobs(index, delta.token_ids, delta.logprobs, delta.prompt_logprobs)
        if not (text or logprobs or delta.finished):
            return []
        choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": delta.finish_reason}
        if delta.finished:
            choice["stop_reason"] = delta.stop_reason
        return [self.chunk([choice], states)]
