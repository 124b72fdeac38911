"""The next-turn prefill's gates: nothing rendered for an engine without a prefix cache (its prefill would be
dropped: the stub engine behind a real server, through the openai client, its chat template's renders
counted), and with tools, an answer is prefilled as the client sends it back (its calls, then their result)."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import openai

from tests.api.conftest import ThreadedServer, free_port, stub_app
from tests.api.stub_engine import StubEngine, StubTokenizer
from velollm.api import turn_prefill
from velollm.api.generation import ChoiceState
from velollm.api.native_chat import chat_renderer
from velollm.api.remembering import Remembering
from velollm.api.tool_calls import ToolCalls
from velollm.context.fitter import FittedPrompt
from velollm.context.turn_cache import TurnCache
from velollm.tools.tool_prompt import mistral_id


class CountingTokenizer(StubTokenizer):
    def __init__(self) -> None:
        self.renders = 0
        self._lock = threading.Lock()  # prompts render in worker threads

    def apply_chat_template(self, messages, **kw) -> str:
        with self._lock:
            self.renders += 1
        return super().apply_chat_template(messages, **kw)


def renders_of(engine: StubEngine, client: openai.OpenAI, topic: str) -> int:
    before = engine.tokenizer.renders
    client.chat.completions.create(model="demo", max_tokens=4, temperature=0,
                                   messages=[{"role": "user", "content": f"Tell me about {topic}. " * 8}])
    return engine.tokenizer.renders - before


def test_no_prefix_cache_no_next_turn_rendering():
    engine = StubEngine()
    engine.tokenizer = CountingTokenizer()
    port = free_port()
    with ThreadedServer(stub_app(engine, port=port), port):
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=30)
        num_fit = renders_of(engine, client, "rivers")  # no prefix cache: the prompt's renders only
        engine.prefix_caching = True
        renders_of(engine, client, "mountains")
        deadline = time.monotonic() + 10
        while engine.tokenizer.renders < 2 * num_fit + 1 and time.monotonic() < deadline:
            time.sleep(0.02)  # the next turn is rendered in the background, after the answer
        # with a prefix cache, the next turn's one rendering more (its start is the answer's prompt + answer:
        # nothing to prefill); without, none, then or later
        assert engine.tokenizer.renders == 2 * num_fit + 1 and engine.prefilled == []


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def test_with_tools_an_answer_is_prefilled_as_the_client_sends_it_back(monkeypatch):
    """An answer without calls is followed by the user's turn; one with calls (skipped before) by its first call's
    result, the calls as /v1 returns them; a broken call that will be retried is not prefilled."""
    calls = ToolCalls(StubEngine(), TOOLS, "auto", True, retries=1, metrics=None, model="demo")
    plain, call = "Sunny, 21 degrees. ", '{"name": "get_weather", "parameters": {"city": "Paris"}}'
    # through remember_turn, the hook /v1 and /api/chat register
    told: list[tuple] = []
    monkeypatch.setattr(turn_prefill, "next_turn_ids", lambda *args: told.append(args[-2:]) or [7] * 32)
    assert _prefilled_after(calls, plain) == [[7] * 32]
    assert told.pop() == ({"role": "assistant", "content": plain}, {"role": "user"})
    assert _prefilled_after(calls, call) == [[7] * 32]
    answer, follow = told.pop()
    [sent] = answer["tool_calls"]
    assert sent["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert follow == {"role": "tool", "tool_call_id": sent["id"], "name": "get_weather"}
    assert _prefilled_after(calls, '{"name": "get_weather", "parameters": {"town": 1}}') == [] and told == []


def test_a_template_that_renders_call_ids_is_not_prefilled_after_calls():
    """The ids a client got are made by another parse than the prefill's: a template writing them (Mistral's
    9 characters) would give a prefix the next turn does not start with."""
    tokenizer = StubEngine().tokenizer
    messages = [{"role": "user", "content": "The weather in Paris?"}]

    def render(with_ids: bool):
        def text(msgs) -> str:
            return "".join(f"<s>{m['role']}:{m.get('content') or ''}"
                           + "".join(f"[{mistral_id(c['id']) if with_ids else ''}{c['function']['name']}]"
                                     for c in m.get("tool_calls") or ()) + "</s>" for m in msgs)
        return text

    tokenizer.special_texts = frozenset({"<s>", "</s>"})
    answer = {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_abc", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    follow = {"role": "tool", "tool_call_id": "call_abc", "name": "f"}
    choice = ChoiceState(0, text="[f]", token_ids=tokenizer.encode("[f]", add_special_tokens=False))
    for with_ids, prefilled in ((False, True), (True, False)):
        text = render(with_ids)(messages)
        fitted = FittedPrompt(messages, text, tokenizer.encode(text), num_reused=0, report=None)
        ids = turn_prefill.next_turn_ids(TurnCache(), tokenizer, render(with_ids), fitted, choice, answer, follow)
        assert (ids is not None) == prefilled


def _prefilled_after(calls: ToolCalls, answer: str) -> list[list[int]]:
    """What remember_turn prefills after `answer` to a request with `calls`' tools (an engine with a prefix cache)."""
    engine = StubEngine()
    engine.prefix_caching = True
    context = SimpleNamespace(turn_cache=lambda name: TurnCache(), background=set(), remembering=Remembering())
    state = SimpleNamespace(config=SimpleNamespace(prefetch=True, turn_prefill=True), context=context)
    messages = [{"role": "user", "content": "The weather in Paris?"}]
    render = chat_renderer(engine.tokenizer, calls, {})
    text = render(messages)
    fitted = FittedPrompt(messages, text, engine.tokenizer.encode(text), num_reused=0, report=None)
    gen = SimpleNamespace(on_finished=[])
    turn_prefill.remember_turn(state, SimpleNamespace(name="demo", engine=engine), gen, fitted, render, calls)

    async def finish() -> None:
        [hook] = gen.on_finished
        hook([ChoiceState(0, text=answer, token_ids=engine.tokenizer.encode(answer), finish_reason="stop")])
        await asyncio.gather(*context.background)

    asyncio.run(finish())
    return engine.prefilled
