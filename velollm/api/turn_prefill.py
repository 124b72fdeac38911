"""The finished chat turn remembered for the next one, and the next turn's prefix prefilled in the background
(velollm.context.next_turn): one hook, `remember_turn`, for /v1/chat/completions, /v1/responses and /api/chat.

Each finished answer is remembered as prompt + answer ids (TurnCache), so the next prompt starts with the ids
the engine holds. When the template rewrites the previous answer in the next turn (Llama 3's trim, Qwen3
dropping earlier `<think>` parts), the remembered prompt + answer is no prefix of the next prompt. The next
prompt's start is rendered as the template will render it, tokenized through the TurnCache (the unchanged
prefix keeps its ids) and remembered, and the engine computes its full blocks into the prefix cache while it
is idle (LLMEngine.add_prefill: never ahead of a request, dropped when blocks run out). The user's next message
then finds the whole conversation cached. With tools, the template renders them from the tools alone (the
model's own template, or the fallback's system message), so the next turn, sent with the same tools, renders
the same tools block in the same place: an answer without calls is prefilled as any other (its content as
parsed, as the client gets it), and one with calls as the client sends it back (its calls, arguments as parsed,
then the first call's result as the next message): the template writes the calls its own way, which the next
turn's prompt holds and the generated text may not. Not where the template renders the calls' ids (Mistral's):
those the client got are made after this answer's parse, so the prefix would hold others. Not for prompts cut
at the token level, an engine without a prefix cache, nor with `--no-prefetch` / `--no-turn-prefill`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from velollm.api.context_fit import context_state
from velollm.context.next_turn import Render, next_turn_prefix
from velollm.context.turn_cache import TurnCache

if TYPE_CHECKING:
    from velollm.api.generation import ChoiceState, GenerationStream
    from velollm.api.handler import AppState
    from velollm.api.served_model import ServedModel
    from velollm.api.tool_calls import ToolCalls
    from velollm.context.fitter import FittedPrompt

logger = logging.getLogger(__name__)


def remember_turn(state: AppState, served: ServedModel, gen: GenerationStream, fitted: FittedPrompt,
                  render: Render | None, tools: ToolCalls | None) -> None:
    """When the answer is complete, its prompt and ids are remembered for the conversation's next turn (off the
    event loop; the model's next fit waits for it: api.remembering), then,
    with `render` (the request's chat template, through `tools` when it has tools; None where the next turn
    cannot be told from it), the next turn's prefix is rendered, remembered and prefilled (off the event loop;
    the engine runs it when idle).
    Nothing for a prompt cut at the token level (its ids are not its text's: the next turn would start with
    the cut)."""
    if not state.config.prefetch or fitted.cut is not None:
        return
    ctx = context_state(state)
    cache = ctx.turn_cache(served.name)
    tokenizer = served.engine.tokenizer
    prefill = _prefill_of(served.engine) if state.config.turn_prefill else None

    def on_finished(choices: list[ChoiceState]) -> None:
        # On a worker thread (a 1M-token turn is megabytes hashed and copied); the model's next fit waits for it.
        remembered = ctx.remembering.start(served.name, functools.partial(
            cache.remember_turn, tokenizer, fitted.text, fitted.token_ids, choices[0].token_ids))
        if render is None or prefill is None:
            return
        prepare = functools.partial(_prefill_next_turn, cache, tokenizer, render, fitted, tools, prefill, choices[0])
        task = asyncio.get_running_loop().create_task(_after(remembered, prepare))
        ctx.background.add(task)  # held until done: a task only weakly referenced may be collected
        task.add_done_callback(_done(ctx.background))

    gen.on_finished.append(on_finished)


async def _after(remembered: asyncio.Task[None], prepare: Callable[[], None]) -> None:
    """`prepare` on a worker thread once the turn is remembered: the next turn's prefix is encoded from it."""
    await asyncio.wait([remembered])
    await asyncio.to_thread(prepare)


def _prefill_next_turn(cache: TurnCache, tokenizer: Any, render: Render, fitted: FittedPrompt, tools: ToolCalls | None,
                       prefill: Callable[[list[int]], None], choice: ChoiceState) -> None:
    """The next turn's prefix after `choice` rendered, remembered and prefilled (on a worker thread); after an
    answer with tool calls, up to their first result."""
    turn = ({"role": "assistant", "content": choice.text}, None) if tools is None else tools.next_turn(choice.text)
    if turn is None:
        return
    ids = next_turn_ids(cache, tokenizer, render, fitted, choice, *turn)
    if ids is not None:
        prefill(ids)


def _prefill_of(engine: Any) -> Callable[[list[int]], None] | None:
    """The engine's background prefill, None where it has none or no prefix cache to fill (then nothing is
    rendered for it)."""
    return engine.prefill if getattr(engine, "prefix_caching", False) else None


def next_turn_ids(cache: TurnCache, tokenizer: Any, render: Render, fitted: FittedPrompt, choice: ChoiceState,
                  answer: Mapping[str, Any], follow: Mapping[str, Any] | None = None) -> list[int] | None:
    """The ids of the next turn's prefix (`answer` as the client sends it back, `follow` the next message but its
    content), remembered in `cache`; None when the remembered prompt + answer covers it already (the engine holds
    those blocks from the answer), the template cannot tell it or it renders call ids the client was not given."""
    answered = fitted.text + tokenizer.decode(list(choice.token_ids), skip_special_tokens=False)
    text = next_turn_prefix(render, list(fitted.messages), answer, getattr(tokenizer, "special_texts", frozenset()),
                            covered=answered, follow=follow)
    if text is None or _renders_ids(text, answer):
        return None
    encoded = cache.encode(tokenizer, text)
    cache.remember(text, encoded.token_ids)
    return encoded.token_ids


def _renders_ids(text: str, answer: Mapping[str, Any]) -> bool:
    """Whether the template wrote the calls' ids (as sent, or made Mistral's 9 characters): the parse that made
    them is not the one whose ids the client got."""
    from velollm.tools.tool_prompt import mistral_id

    ids = [str(c.get("id")) for c in answer.get("tool_calls") or ()]
    return any(i in text or mistral_id(i) in text for i in ids)


def _done(tasks: set[asyncio.Task[None]]):
    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("next-turn prefill not prepared: %r", task.exception())
    return done
