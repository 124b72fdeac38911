"""A finished turn is remembered on a worker thread (a 1.3M-token turn took the event loop 0.6 s: /health and
every stream stalled), and the model's next fit waits for it, so a next turn sent at once still starts with the
previous prompt and answer ids. Driven through the chat paths' hook (turn_prefill.remember_turn) and fit
(context_fit.fit_chat), with a tokenizer whose decode inside the remember waits for the event loop."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from tests.api.stub_engine import StubTokenizer
from velollm.api import turn_prefill
from velollm.api.context_fit import ContextState, fit_chat
from velollm.api.generation import ChoiceState
from velollm.api.native_chat import chat_renderer
from velollm.context.metrics import ContextMetrics


class GatedTokenizer(StubTokenizer):
    """Its next decode after `hold()` waits (at most 5 s) for the returned event: the turn's remember decodes
    the answer, so it runs until the event loop sets it, which it can only do if the remember is not on it."""

    def __init__(self) -> None:
        self._gate: threading.Event | None = None
        self.released: bool | None = None

    def hold(self) -> threading.Event:
        self._gate = threading.Event()
        return self._gate

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        gate, self._gate = self._gate, None
        if gate is not None:
            self.released = gate.wait(5)
        return super().decode(ids, skip_special_tokens)


def test_a_turn_is_remembered_off_the_event_loop_and_the_next_fit_waits_for_it():
    tokenizer = GatedTokenizer()
    config = SimpleNamespace(prefetch=True, turn_prefill=False, context_overflow=None)
    state = SimpleNamespace(config=config, context=ContextState(ContextMetrics(CollectorRegistry())))
    served = SimpleNamespace(name="demo", engine=SimpleNamespace(tokenizer=tokenizer))
    render = chat_renderer(tokenizer, None, {})
    messages = [{"role": "user", "content": "The river ran quietly past the old mill. " * 3}]
    answer = "It did, all day long, and the miller counted."
    answer_ids = tokenizer.encode(answer, add_special_tokens=False)

    async def fit(chat):
        return await fit_chat(state, served, chat, render, api="openai", requested=None, context_len=4096,
                              max_tokens=16)

    async def turns():
        first = await fit(messages)
        gen = SimpleNamespace(on_finished=[])
        turn_prefill.remember_turn(state, served, gen, first, render, None)
        release = tokenizer.hold()
        [finished] = gen.on_finished
        finished([ChoiceState(0, text=answer, token_ids=answer_ids, finish_reason="stop")])
        assert state.context.remembering.num_running("demo") == 1
        await asyncio.sleep(0)  # the loop goes on meanwhile
        following = messages + [{"role": "assistant", "content": answer}, {"role": "user", "content": "Go on."}]
        second = asyncio.create_task(fit(following))
        done, _ = await asyncio.wait([second], timeout=0.3)
        assert not done  # waiting for the turn being remembered
        release.set()
        return first, await second

    first, second = asyncio.run(turns())
    assert tokenizer.released  # the remember's decode was let go by the event loop: it ran on a worker thread
    assert second.num_reused == len(first.token_ids) + len(answer_ids)
    assert second.token_ids[:second.num_reused] == first.token_ids + answer_ids
    assert state.context.remembering.num_running("demo") == 0
