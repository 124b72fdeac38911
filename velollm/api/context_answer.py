"""The answer's part of /api/generate's `context`: the ids of the text the answer returned, as in Ollama, whose
context is tokenize(prompt + response). What ended the answer is not in that text, so not in the context: the
end-of-sequence token or stop id (a continuation would carry it mid-prompt), and the tokens of a stop string,
which the engine generated but cut from the response.

The generated ids are kept as far as their text lies within the response (the continuation's prompt then extends
this one's, and the prefix cache reuses it); only the piece of the token the stop string began in is tokenized
again."""

from __future__ import annotations

from typing import Any

from velollm.api.generation import ChoiceState


def answer_context_ids(choice: ChoiceState, end_ids: frozenset[int], tokenizer: Any = None) -> list[int]:
    """The ids of `choice`'s answer that /api/generate's context ends with (see the module docstring)."""
    answer = list(choice.token_ids)
    if choice.finish_reason != "stop" or not answer:  # cut by its length: an EOS sampled mid-answer stays
        return answer
    if answer[-1] in end_ids:
        return answer[:-1]
    if isinstance(choice.stop_reason, str) and choice.stop_reason and tokenizer is not None:
        return ids_before_stop(tokenizer, answer, choice.stop_reason)
    return answer


def answer_logprob_count(choice: ChoiceState, end_ids: frozenset[int], tokenizer: Any = None) -> int:
    """How many of `choice`'s tokens keep their logprobs in an Ollama answer: as its runner, not the token that
    ended it (EOS, a stop id) nor those a stop string took whole (TruncateStop's removed pieces); a token whose
    text the stop cut in part keeps its logprob."""
    answer = choice.token_ids
    if choice.finish_reason != "stop" or not answer:
        return len(answer)
    if answer[-1] in end_ids:
        return len(answer) - 1
    if isinstance(choice.stop_reason, str) and choice.stop_reason and tokenizer is not None:
        _, start = _stop_start(tokenizer, answer, choice.stop_reason)
        if start >= 0:
            # token k starts where the text of the tokens before it ends: kept while that is before the stop
            return next((k + 1 for k in range(len(answer) - 1, -1, -1)
                         if len(tokenizer.decode(answer[:k])) < start), 0)
    return len(answer)


def _stop_start(tokenizer: Any, token_ids: list[int], stop: str) -> tuple[str, int]:
    """The ids' text and where in it the stop string that ended them begins (-1: not found)."""
    text = tokenizer.decode(token_ids)
    # The occurrence that ended the answer is the one its last token completed: search from where the text
    # before that token could still hold the stop's first characters (an earlier one fell before min_tokens).
    before_last = tokenizer.decode(token_ids[:-1]).rstrip("\ufffd")
    start = text.find(stop, max(0, len(before_last) - len(stop) + 1))
    return text, (start if start >= 0 else text.find(stop))


def ids_before_stop(tokenizer: Any, token_ids: list[int], stop: str) -> list[int]:
    """`token_ids` (an answer the stop string `stop` ended) without the stop string and what followed it in its
    last token: the ids whose text ends at or before where the stop began, and the text between them and the
    stop tokenized again. Unchanged when the stop is not found in the ids' text (nothing is cut then)."""
    text, start = _stop_start(tokenizer, token_ids, stop)
    if start < 0:
        return token_ids
    kept = text[:start]
    for k in range(len(token_ids) - 1, -1, -1):
        prefix = tokenizer.decode(token_ids[:k])
        if len(prefix) <= start and kept.startswith(prefix):
            rest = kept[len(prefix):]
            return token_ids[:k] + (tokenizer.encode(rest, add_special_tokens=False) if rest else [])
    return tokenizer.encode(kept, add_special_tokens=False) if kept else []
