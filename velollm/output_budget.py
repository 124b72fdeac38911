"""How many tokens a request may generate: the one place that clamps max_tokens to the context."""

from __future__ import annotations

from velollm.errors import ContextOverflow


def fit_max_tokens(num_prompt_tokens: int, requested: int | None, max_model_len: int,
                   param: str = "prompt") -> int:
    """The request's max_tokens clamped to what fits the context after the prompt (None: all of it).

    A prompt that leaves no room for one output token is a ContextOverflow (400, naming `param`).
    """
    room = max_model_len - num_prompt_tokens
    if room < 1:
        raise ContextOverflow(f"this model's maximum context length is {max_model_len} tokens, but the prompt "
                              f"has {num_prompt_tokens} tokens (at least one output token must fit)",
                              param=param)
    return room if requested is None else min(requested, room)
