"""Tool-call handling around the engine, with a stub that answers a script of texts.

What a random model cannot be made to write on purpose: broken calls that get repaired or retried
with a corrective message, calls the model chose by itself (Ollama has no tool_choice), calls
beyond parallel_tool_calls=false, and the fallback prompt of a template that knows no tools.
"""

from __future__ import annotations

import json

import httpx
import ollama
import openai
import pytest

from tests.api.conftest import ServerHandle, ThreadedServer, free_port, stub_app
from tests.api.stub_engine import OFFSET, StubEngine
from velollm.outputs import RequestDelta

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}}
GOOD = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
UNKNOWN = '{"name": "get_wether_now", "parameters": {"city": "Paris"}}'
MESSAGES = [{"role": "user", "content": "Weather in Paris?"}]


class ScriptedEngine(StubEngine):
    """Answers the i-th request with script[i] (the last one repeats), one character per token; a script
    longer than max_tokens is cut there and ends "length", as the engine ends it."""

    def __init__(self) -> None:
        super().__init__(max_model_len=4096, token_delay_s=0.0)
        self.script: list[str] = []
        self.num_calls = 0

    async def _deltas(self, prompt, params, request_id):
        script = self.script[min(self.num_calls, len(self.script) - 1)]
        text = script[: params.max_tokens]
        finish = "length" if len(text) < len(script) else "stop"
        self.num_calls += 1
        tokens = [b + OFFSET for b in text.encode()]
        for pos, token in enumerate(tokens):
            last = pos + 1 == len(tokens)
            yield RequestDelta(request_id=request_id, text=chr(token - OFFSET), token_ids=[token],
                               finish_reason=finish if last else None, num_prompt_tokens=len(prompt),
                               num_output_tokens=pos + 1)


@pytest.fixture(scope="module")
def scripted():
    engine = ScriptedEngine()
    port = free_port()
    with ThreadedServer(stub_app(engine, port=port, tool_retries=1), port):
        yield ServerHandle("stub", f"http://127.0.0.1:{port}", engine=engine)


@pytest.fixture
def engine(scripted) -> ScriptedEngine:
    scripted.engine.script, scripted.engine.num_calls = [], 0
    scripted.engine.seen_prompts.clear()
    return scripted.engine


def _client(server: ServerHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=30)


def _prompt_text(engine: ScriptedEngine, i: int) -> str:
    return engine.tokenizer.decode(engine.seen_prompts[i])


def _outcomes(server: ServerHandle) -> dict[str, float]:
    return {o: server.metric("velollm_tool_calls_total", model="demo", outcome=o)
            for o in ("valid", "repaired", "retried", "failed")}


def test_unusable_call_is_retried_with_a_corrective_message(scripted, engine):
    engine.script = [UNKNOWN, GOOD]
    before = _outcomes(scripted)
    r = _client(scripted).chat.completions.create(model="demo", messages=MESSAGES, tools=[WEATHER])
    [call] = r.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert r.choices[0].finish_reason == "tool_calls" and r.choices[0].message.content is None
    assert engine.num_calls == 2
    retry_prompt = _prompt_text(engine, 1)
    assert UNKNOWN in retry_prompt and "Your previous tool call could not be used" in retry_prompt
    after = _outcomes(scripted)
    assert after["retried"] == before["retried"] + 1 and after["valid"] == before["valid"] + 1


def test_when_retries_run_out_the_text_is_returned_as_content(scripted, engine):
    engine.script = [UNKNOWN]
    before = _outcomes(scripted)
    r = _client(scripted).chat.completions.create(model="demo", messages=MESSAGES, tools=[WEATHER])
    assert engine.num_calls == 2  # --tool-retries 1
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason == "stop"
    assert UNKNOWN in r.choices[0].message.content  # never dropped silently
    after = _outcomes(scripted)
    assert after["failed"] == before["failed"] + 1 and after["retried"] == before["retried"] + 1


def test_repairable_call_is_repaired_not_retried(scripted, engine):
    engine.script = ["```json\n{'name': 'get_weather', 'parameters': {'city': 'Paris', 'days': '3',}}\n```"]
    before = _outcomes(scripted)
    r = _client(scripted).chat.completions.create(model="demo", messages=MESSAGES, tools=[WEATHER])
    [call] = r.choices[0].message.tool_calls
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 3} and engine.num_calls == 1
    assert _outcomes(scripted)["repaired"] == before["repaired"] + 1


def test_parallel_tool_calls_false_keeps_one_call(scripted, engine):
    second = '{"name": "get_weather", "parameters": {"city": "Rome"}}'
    engine.script = [f"{GOOD}; {second}"]
    for parallel, expected in ((True, ["Paris", "Rome"]), (False, ["Paris"])):
        r = _client(scripted).chat.completions.create(model="demo", messages=MESSAGES, tools=[WEATHER],
                                                      parallel_tool_calls=parallel)
        cities = [json.loads(c.function.arguments)["city"] for c in r.choices[0].message.tool_calls]
        assert cities == expected


def test_openai_stream_sends_call_deltas_and_tool_calls_finish(scripted, engine):
    engine.script = [f"Let me check. {GOOD}"]
    chunks = list(_client(scripted).chat.completions.create(model="demo", messages=MESSAGES, tools=[WEATHER],
                                                            stream=True))
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id and deltas[0].type == "function" and deltas[0].function.name == "get_weather"
    assert deltas[0].function.arguments == ""  # as OpenAI's first chunk of a call
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "Paris"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks).strip() == "Let me check."
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_ollama_chat_returns_whole_calls_with_object_arguments(scripted, engine):
    engine.script = [GOOD]
    client = ollama.Client(host=scripted.url, timeout=30)
    r = client.chat(model="demo", messages=MESSAGES, tools=[WEATHER])
    [call] = r.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}
    assert r.done_reason == "stop" and r.message.content == ""
    parts = list(client.chat(model="demo", messages=MESSAGES, tools=[WEATHER], stream=True))
    calls = [c for p in parts for c in (p.message.tool_calls or [])]
    assert [(c.function.name, c.function.arguments) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert parts[-1].done and "".join(p.message.content for p in parts) == ""


def test_ollama_calls_carry_an_id_and_their_index_in_the_answer(scripted, engine):
    """Ollama (v0.12.10+) sends {"id": "call_...", "function": {"index", "name", "arguments"}}; the index counts the
    answer's calls from 0, across the chunks of a stream."""
    engine.script = [f'[{GOOD}, {GOOD.replace("Paris", "Oslo")}]']
    body = {"model": "demo", "messages": MESSAGES, "tools": [WEATHER]}
    whole = httpx.post(f"{scripted.url}/api/chat", timeout=30, json={**body, "stream": False}).json()
    lines = httpx.post(f"{scripted.url}/api/chat", timeout=30, json={**body, "stream": True}).text.splitlines()
    streamed = [c for line in lines for c in json.loads(line)["message"].get("tool_calls", [])]
    for calls in (whole["message"]["tool_calls"], streamed):
        assert [c["function"] for c in calls] == [
            {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}},
            {"index": 1, "name": "get_weather", "arguments": {"city": "Oslo"}}]
        assert all(c["id"].startswith("call_") for c in calls) and calls[0]["id"] != calls[1]["id"]
        assert "type" not in calls[0]  # no type on Ollama's native calls
    assert {c["id"] for c in streamed}.isdisjoint(c["id"] for c in whole["message"]["tool_calls"])


def test_history_renders_through_the_fallback_prompt(scripted, engine):
    """The stub's template knows no tools: the tools and the call history go in as text."""
    engine.script = [GOOD]
    history = [*MESSAGES,
               {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
                   "name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "-3 C, snow"},
               {"role": "user", "content": "And in Paris?"}]
    _client(scripted).chat.completions.create(model="demo", messages=history, tools=[WEATHER])
    prompt = _prompt_text(engine, 0)
    assert "You can call these functions" in prompt and '"get_weather"' in prompt
    assert '{"name": "get_weather", "parameters": {"city": "Oslo"}}' in prompt
    assert "Result of get_weather:\n-3 C, snow" in prompt
    ollama_history = [*MESSAGES,
                      {"role": "assistant", "content": "", "tool_calls": [{"function": {
                          "name": "get_weather", "arguments": {"city": "Oslo"}}}]},
                      {"role": "tool", "tool_name": "get_weather", "content": "-3 C, snow"},
                      {"role": "user", "content": "And in Paris?"}]
    ollama.Client(host=scripted.url, timeout=30).chat(model="demo", messages=ollama_history, tools=[WEATHER])
    assert _prompt_text(engine, 1) == prompt  # both wire formats render the same conversation


def test_tool_choice_none_leaves_the_text_alone(scripted, engine):
    engine.script = [GOOD]
    r = _client(scripted).chat.completions.create(model="demo", messages=MESSAGES, tools=[WEATHER],
                                                  tool_choice="none")
    assert r.choices[0].message.content == GOOD and r.choices[0].message.tool_calls is None
    assert r.choices[0].finish_reason == "stop"


def _ollama_chat_raw(server: ServerHandle, messages: list[dict], options: dict) -> httpx.Response:
    """The same request as the ollama client's, for the x-velollm-context header it does not expose."""
    return httpx.post(f"{server.url}/api/chat", timeout=30, json={
        "model": "demo", "messages": messages, "tools": [WEATHER], "stream": False, "options": options})


def test_ollama_retry_keeps_the_token_cut_and_num_ctx_of_its_first_attempt(scripted, engine):
    """A last message longer than num_ctx is cut at the token level (Ollama's truncation); the retry after an
    unusable call runs the same cut prompt plus the corrective turn, within num_ctx, not the uncut one.
    (num_predict keeps room for that turn: the cut leaves only the room kept for the answer.)"""
    num_ctx, options = 1024, {"num_ctx": 1024, "num_predict": 400}
    messages = [{"role": "user", "content": "Weather in Paris? " + "Tell me everything. " * 150}]
    engine.script = [UNKNOWN, GOOD]
    r = ollama.Client(host=scripted.url, timeout=30).chat(model="demo", messages=messages, tools=[WEATHER],
                                                            options=options)
    [call] = r.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}
    assert engine.num_calls == 2
    first, retry = engine.seen_prompts
    assert len(first) < num_ctx and len(retry) < num_ctx
    keep = 4  # Ollama's default num_keep: the first ids stay, the cut runs up to the tail
    assert retry[:keep] == first[:keep]
    retry_text = engine.tokenizer.decode(retry)
    assert UNKNOWN in retry_text
    assert "Your previous tool call could not be used" in retry_text
    # The first attempt's prompt (less its generation prompt) is in the retry's, id for id.
    shared = first[: len(first) - 16]
    assert any(retry[i:i + len(shared)] == shared for i in range(len(retry) - len(shared) + 1))
    # The report says what ran: the cut of the client's conversation, the first attempt's prompt size.
    engine.script, engine.num_calls = [UNKNOWN, GOOD], 0
    engine.seen_prompts.clear()
    response = _ollama_chat_raw(scripted, messages, options)
    assert response.status_code == 200, response.text
    header = response.headers["x-velollm-context"]
    assert "cut_tokens=4-" in header and f"->{len(engine.seen_prompts[0])}" in header
    assert len(engine.seen_prompts[1]) < num_ctx


def test_ollama_retry_that_no_longer_fits_num_ctx_is_skipped(scripted, engine):
    """The first prompt fits num_ctx; the failed answer and the corrective message would take the retry past it:
    the first answer stands (as content, never dropped), as when a retry does not fit the model's context."""
    num_ctx = 1024
    first_len = len(engine.tokenizer.encode(
        _ollama_render(scripted, engine, MESSAGES, num_ctx)))  # one run: the prompt's size
    note = "x" * (num_ctx - first_len - len(UNKNOWN) - 16)  # the answer fills what num_ctx leaves
    long_unknown = UNKNOWN[:-2] + f', "note": "{note}"}}}}'
    engine.script = [long_unknown, GOOD]
    engine.num_calls = 0
    engine.seen_prompts.clear()
    r = ollama.Client(host=scripted.url, timeout=30).chat(model="demo", messages=MESSAGES, tools=[WEATHER],
                                                            options={"num_ctx": num_ctx})
    assert all(len(p) < num_ctx for p in engine.seen_prompts)
    assert engine.num_calls == 1
    assert not r.message.tool_calls and r.message.content == long_unknown


def _ollama_render(server: ServerHandle, engine: ScriptedEngine, messages: list[dict], num_ctx: int) -> str:
    engine.script = [GOOD]
    ollama.Client(host=server.url, timeout=30).chat(model="demo", messages=messages, tools=[WEATHER],
                                                    options={"num_ctx": num_ctx})
    return _prompt_text(engine, 0)


def test_usage_after_a_retry_counts_the_prompt_its_answer_came_from(scripted, engine):
    """After a retry, the answer came from the retry's prompt (the request's prompt, the failed answer and
    the corrective message): usage.prompt_tokens and prompt_eval_count count that prompt, as the completion
    counts that answer, on both APIs; with n=2, the request's prompt counts once more for the choice that
    kept its first answer."""
    engine.script = [UNKNOWN, GOOD]
    r = _client(scripted).chat.completions.create(model="demo", messages=MESSAGES, tools=[WEATHER])
    first, retry = engine.seen_prompts
    assert len(retry) > len(first) + len(UNKNOWN)
    assert r.usage.prompt_tokens == len(retry) and r.usage.completion_tokens == len(GOOD)
    assert r.usage.total_tokens == len(retry) + len(GOOD)
    engine.script, engine.num_calls = [UNKNOWN, GOOD], 0
    engine.seen_prompts.clear()
    o = ollama.Client(host=scripted.url, timeout=30).chat(model="demo", messages=MESSAGES, tools=[WEATHER])
    first, retry = engine.seen_prompts
    assert o.message.tool_calls and o.prompt_eval_count == len(retry) and o.eval_count == len(GOOD)
    engine.script, engine.num_calls = [UNKNOWN, GOOD, GOOD], 0
    engine.seen_prompts.clear()
    r = _client(scripted).chat.completions.create(model="demo", messages=MESSAGES, tools=[WEATHER], n=2)
    first, _, retry = engine.seen_prompts
    assert all(c.message.tool_calls for c in r.choices)
    assert r.usage.prompt_tokens == len(first) + len(retry) and r.usage.completion_tokens == 2 * len(GOOD)
    # No retry: the request's prompt, once.
    engine.script, engine.num_calls = [GOOD], 0
    engine.seen_prompts.clear()
    r = _client(scripted).chat.completions.create(model="demo", messages=MESSAGES, tools=[WEATHER], n=2)
    assert r.usage.prompt_tokens == len(engine.seen_prompts[0])
