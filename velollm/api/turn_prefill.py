"""The next chat turn's prefix prefilled in the background when an answer ends (velollm.context.next_turn).

When the template rewrites the previous answer in the next turn (Llama 3's trim, Qwen3 dropping earlier
`<think>` parts), the remembered prompt + answer is no prefix of the next prompt. The next prompt's start is
rendered as the template will render it, tokenized through the TurnCache (the unchanged prefix keeps its
ids) and remembered, and the engine computes its full blocks into the prefix cache while it is idle
(LLMEngine.add_prefill: never ahead of a request, dropped when blocks run out). The user's next message then
finds the whole conversation cached. Not for prompts cut at the token level, requests with tools (the answer
may be calls, and the next turn a tool result), nor with `--no-prefetch` / `--no-turn-prefill`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from velollm.api.context_fit import context_state
from velollm.context.next_turn import Render, next_turn_prefix
from velollm.context.turn_cache import TurnCache

if TYPE_CHECKING:
    from velollm.api.generation import ChoiceState, GenerationStream
    from velollm.api.handler import AppState
    from velollm.api.served_model import ServedModel
    from velollm.context.fitter import FittedPrompt

logger = logging.getLogger(__name__)


def prefill_next_turn(state: AppState, served: ServedModel, gen: GenerationStream, fitted: FittedPrompt,
                      render: Render, *, has_tools: bool = False) -> None:
    """When the answer is complete, the next turn's prefix is rendered, remembered and prefilled (off the
    event loop; the engine runs it when idle)."""
    config = state.config
    engine = served.engine
    if not (config.prefetch and config.turn_prefill) or fitted.cut is not None or has_tools:
        return
    prefill = getattr(engine, "prefill", None)
    if prefill is None:
        return
    ctx = context_state(state)
    cache = ctx.turn_cache(served.name)
    tokenizer = engine.tokenizer

    def prepare(choice: ChoiceState) -> None:
        ids = next_turn_ids(cache, tokenizer, render, fitted, choice)
        if ids is not None:
            prefill(ids)

    def on_finished(choices: list[ChoiceState]) -> None:
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(prepare, choices[0]))
        ctx.background.add(task)  # held until done: a task only weakly referenced may be collected
        task.add_done_callback(_done(ctx.background))

    gen.on_finished.append(on_finished)


def next_turn_ids(cache: TurnCache, tokenizer: Any, render: Render, fitted: FittedPrompt,
                  choice: ChoiceState) -> list[int] | None:
    """The ids of the next turn's prefix, remembered in `cache`; None when the remembered prompt + answer
    covers it already (the engine holds those blocks from the answer) or the template cannot tell it."""
    answer: Mapping[str, Any] = {"role": "assistant", "content": choice.text}  # as the client sends it back
    answered = fitted.text + tokenizer.decode(list(choice.token_ids), skip_special_tokens=False)
    text = next_turn_prefix(render, list(fitted.messages), answer, getattr(tokenizer, "special_texts", frozenset()),
                            covered=answered)
    if text is None:
        return None
    encoded = cache.encode(tokenizer, text)
    cache.remember(text, encoded.token_ids)
    return encoded.token_ids


def _done(tasks: set[asyncio.Task[None]]):
    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("next-turn prefill not prepared: %r", task.exception())
    return done
