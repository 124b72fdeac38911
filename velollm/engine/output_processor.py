"""Turns sampled tokens into text deltas: incremental detokenization and the stop conditions."""

from __future__ import annotations

from dataclasses import dataclass

from velollm.engine.request import Request
from velollm.engine.text.detokenizer import IncrementalDetokenizer
from velollm.engine.text.tokenizer import Tokenizer
from velollm.outputs import RequestDelta


@dataclass
class _TextState:
    detokenizer: IncrementalDetokenizer
    text: str = ""
    num_sent_chars: int = 0
    num_sent_tokens: int = 0
    # output_kind "final_only" without stop strings: ids wait here and are detokenized once, at the finish
    # (one step() over all of them gives the text that step-by-step would).
    pending: list[int] | None = None
    longest_stop: int = 0  # characters in the longest stop string (0: none)
    sent_prompt_logprobs: bool = False

    def finish_text(self) -> None:
        if self.pending:
            self.text += self.detokenizer.step(self.pending)
            self.pending.clear()
        self.text += self.detokenizer.flush()  # bytes held back for a character that will never complete


class OutputProcessor:
    """Per request: detokenize new tokens, apply EOS / stop ids / stop strings / max_tokens / context."""

    def __init__(self, tokenizer: Tokenizer, eos_token_ids: frozenset[int], max_model_len: int) -> None:
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.max_model_len = max_model_len
        self.states: dict[str, _TextState] = {}

    def add(self, request: Request) -> None:
        params = request.params
        detokenizer = IncrementalDetokenizer(self.tokenizer, request.prompt_token_ids, params.skip_special_tokens)
        deferred = params.output_kind == "final_only" and not params.stop
        self.states[request.request_id] = _TextState(detokenizer, pending=[] if deferred else None,
                                                     longest_stop=max(map(len, params.stop), default=0))

    def remove(self, request_id: str) -> None:
        self.states.pop(request_id, None)

    def append_token(self, request: Request, token_id: int, logprobs: dict[int, float] | None) -> None:
        """Record a sampled token and decide whether it ends the request (sets finish_reason)."""
        request.output_token_ids.append(token_id)
        if logprobs is not None:
            request.output_logprobs.append(logprobs)
        state = self.states[request.request_id]
        if self._check_stop(request, state, token_id) != "stop-string" and request.finish_reason is not None:
            state.finish_text()

    def _check_stop(self, request: Request, state: _TextState, token_id: int) -> str | None:
        params = request.params
        num_out = len(request.output_token_ids)
        grammar_done = request.grammar is not None and (
            not request.grammar.accept_token(token_id) or request.grammar.is_terminated())
        if grammar_done and (token_id in self.eos_token_ids or token_id in params.stop_token_ids):
            request.finish_reason, request.stop_reason = "stop", None  # the grammar ended on a stop token
            return "eos"
        # The sampler bans EOS and stop ids below min_tokens, so seeing one here ends the request.
        if not params.ignore_eos and token_id in self.eos_token_ids:
            request.finish_reason, request.stop_reason = "stop", None
            return "eos"
        if token_id in params.stop_token_ids:
            request.finish_reason, request.stop_reason = "stop", token_id
            return "stop-id"
        if state.pending is not None:
            state.pending.append(token_id)
            new_text = ""
        else:
            new_text = state.detokenizer.step([token_id])
        if new_text:
            state.text += new_text
            if params.stop and num_out >= params.min_tokens and self._cut_at_stop(request, state, len(new_text)):
                return "stop-string"
        if grammar_done:  # the constrained answer is complete (even with ignore_eos)
            request.finish_reason, request.stop_reason = "stop", None
            return "grammar"
        if (params.max_tokens is not None and num_out >= params.max_tokens) or request.num_tokens >= self.max_model_len:
            request.finish_reason = "length"
            return "length"
        return None

    def _cut_at_stop(self, request: Request, state: _TextState, num_new_chars: int) -> bool:
        params = request.params
        longest = state.longest_stop
        search_from = max(0, len(state.text) - num_new_chars - longest + 1)
        hits = [(state.text.find(s, search_from), s) for s in params.stop]
        hits = [(index, s) for index, s in hits if index >= 0]
        if not hits:
            return False
        index, stop = min(hits)
        state.text = state.text[: index + len(stop) if params.include_stop_str_in_output else index]
        request.finish_reason, request.stop_reason = "stop", stop
        return True

    def delta(self, request: Request, finish_reason: str | None = None) -> RequestDelta:
        """New text and tokens since the last delta. Text that may begin a stop string is held back."""
        state = self.states[request.request_id]
        if finish_reason and state.pending:  # an abort: the text so far
            state.finish_text()
        finish_reason = finish_reason or request.finish_reason
        holdback = 0 if finish_reason or not state.longest_stop else state.longest_stop - 1
        end = max(state.num_sent_chars, len(state.text) - holdback)
        text = state.text[state.num_sent_chars : end]
        token_ids = request.output_token_ids[state.num_sent_tokens :]
        logprobs = request.output_logprobs[state.num_sent_tokens :] if request.params.logprobs is not None else None
        state.num_sent_chars, state.num_sent_tokens = end, len(request.output_token_ids)
        prompt_logprobs = None
        if request.prompt_logprobs is not None and not state.sent_prompt_logprobs:
            prompt_logprobs, state.sent_prompt_logprobs = request.prompt_logprobs, True
        return RequestDelta(
            request_id=request.request_id,
            text=text,
            token_ids=token_ids,
            logprobs=logprobs,
            finish_reason=finish_reason,  # type: ignore[arg-type]
            stop_reason=request.stop_reason,
            num_prompt_tokens=request.num_prompt_tokens,
            num_cached_tokens=max(request.num_cached_tokens, 0),
            num_output_tokens=len(request.output_token_ids),
            prompt_logprobs=prompt_logprobs,
        )
