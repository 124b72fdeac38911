"""Thinking split from the answer on both APIs, with a stub that writes scripted think tags.

A random model cannot be made to write `<think>...</think>` on purpose: this stub's template reads as a
thinking template (Qwen3-style, with enable_thinking, or DeepSeek-R1-style, which opens <think> in the
prompt) and it answers a script, one character per token.
"""

from __future__ import annotations

import json

import httpx
import ollama
import openai
import pytest

from tests.api.conftest import ServerHandle
from tests.api.stub_engine import StubTokenizer
from tests.api.test_tools_scripted import WEATHER, scripted  # noqa: F401 (the scripted server fixture)
from velollm.sampling_params import ReasoningSpan

HYBRID = "{% if enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{{ c.split('</think>')[-1] }}"
OPENS = "{{ c.split('</think>')[-1] }}{% if add_generation_prompt %}<think>\n{% endif %}"
THOUGHT = "<think>\nThe user says hi.\n</think>\n\n"
MESSAGES = [{"role": "user", "content": "Hi"}]


class ThinkingTokenizer(StubTokenizer):
    """A stub tokenizer whose template thinks: Qwen3-style (hybrid) or R1-style (opens <think>)."""

    def __init__(self, template: str) -> None:
        self.chat_template = template
        self.template_kwargs: list[dict] = []

    def token_to_id(self, token: str) -> int | None:
        return None  # "</think>" is several byte tokens here

    def apply_chat_template(self, messages, *, tools=None, add_generation_prompt=True, **kw) -> str:
        self.template_kwargs.append(kw)
        text = super().apply_chat_template(messages, tools=tools, add_generation_prompt=add_generation_prompt)
        if kw.get("enable_thinking") is False:
            text += "<think>\n\n</think>\n\n"
        return text + ("<think>\n" if self.chat_template == OPENS and add_generation_prompt else "")

    def encode_chat(self, messages, *, tools=None, add_generation_prompt=True, **kw) -> list[int]:
        return self.encode(self.apply_chat_template(messages, tools=tools, add_generation_prompt=add_generation_prompt,
                                                    **kw))


@pytest.fixture(scope="module")
def thinking_server(scripted):
    return scripted


@pytest.fixture
def engine(thinking_server):
    e = thinking_server.engine
    e.tokenizer = ThinkingTokenizer(HYBRID)
    e.script, e.num_calls = [], 0
    e.seen_params.clear()
    return e


def _openai(server: ServerHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=30)


def test_openai_answer_is_split_with_reasoning_tokens(thinking_server, engine):
    engine.script = [THOUGHT + "Hello!"]
    r = _openai(thinking_server).chat.completions.create(model="demo", messages=MESSAGES)
    message = r.choices[0].message
    assert message.content == "Hello!" and message.reasoning_content == "The user says hi."
    # One token per character: the thinking is everything up to and including "</think>".
    assert r.usage.completion_tokens_details.reasoning_tokens == len(THOUGHT.rstrip())
    assert r.usage.completion_tokens == len(THOUGHT + "Hello!")
    assert engine.tokenizer.template_kwargs[-1] == {"enable_thinking": True}  # unset: Ollama's default, think


def test_openai_stream_sends_reasoning_content_deltas(thinking_server, engine):
    engine.script = [THOUGHT + "Hello!"]
    chunks = list(_openai(thinking_server).chat.completions.create(
        model="demo", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == "The user says hi."
    assert "".join(d.content or "" for d in deltas) == "Hello!"
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == len(THOUGHT.rstrip())


def test_reasoning_effort_none_renders_no_think_and_include_reasoning_false_hides_it(thinking_server, engine):
    engine.script = ["Hello!", THOUGHT + "Hello!"]
    client = _openai(thinking_server)
    r = client.chat.completions.create(model="demo", messages=MESSAGES, reasoning_effort="none")
    assert engine.tokenizer.template_kwargs[-1] == {"enable_thinking": False}
    assert r.choices[0].message.content == "Hello!"
    r = client.chat.completions.create(model="demo", messages=MESSAGES, extra_body={"include_reasoning": False})
    assert r.choices[0].message.content == "Hello!" and getattr(r.choices[0].message, "reasoning_content", None) is None


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_comes_from_the_answer_never_from_the_thinking(thinking_server, engine, stream):
    decoy = '{"name": "get_weather", "parameters": {"city": "Lyon"}}'
    call = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
    engine.script = [f"<think>\nMaybe {decoy}? No, Paris.\n</think>\n\n{call}"]
    client = _openai(thinking_server)
    if stream:
        chunks = list(client.chat.completions.create(model="demo", messages=MESSAGES, tools=[WEATHER], stream=True))
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
        calls = [tc for d in deltas for tc in d.tool_calls or []]
        args = "".join(tc.function.arguments or "" for tc in calls)
        names = [tc.function.name for tc in calls if tc.function.name]
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        r = client.chat.completions.create(model="demo", messages=MESSAGES, tools=[WEATHER])
        reasoning = r.choices[0].message.reasoning_content
        [tc] = r.choices[0].message.tool_calls
        names, args, finish = [tc.function.name], tc.function.arguments, [r.choices[0].finish_reason]
        assert r.choices[0].message.content is None
    assert names == ["get_weather"] and json.loads(args) == {"city": "Paris"} and finish == ["tool_calls"]
    assert decoy in reasoning


def test_constraints_start_after_the_thinking(thinking_server, engine):
    engine.script = [THOUGHT + '{"a": 1}']
    client = _openai(thinking_server)
    client.chat.completions.create(model="demo", messages=MESSAGES, response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}})
    assert engine.seen_params[-1].structured_output.reasoning == ReasoningSpan("<think>", "</think>")
    client.chat.completions.create(model="demo", messages=MESSAGES, tools=[WEATHER], tool_choice="required",
                                   reasoning_effort="none")
    assert engine.seen_params[-1].structured_output.reasoning is None  # no thinking: constrained from the start


def test_prompt_that_opens_the_thinking(thinking_server, engine):
    engine.tokenizer = ThinkingTokenizer(OPENS)
    engine.script = ["Short thought.\n</think>\n\nAnswer."]
    r = _openai(thinking_server).chat.completions.create(model="demo", messages=MESSAGES, response_format={
        "type": "json_object"})
    assert r.choices[0].message.reasoning_content == "Short thought." and r.choices[0].message.content == "Answer."
    assert engine.seen_params[-1].structured_output.reasoning == ReasoningSpan("", "</think>")
    # R1's template cannot switch thinking off: asked not to think, the thinking is dropped.
    r = _openai(thinking_server).chat.completions.create(model="demo", messages=MESSAGES, reasoning_effort="none")
    assert r.choices[0].message.content == "Answer." and getattr(r.choices[0].message, "reasoning_content", None) is None


def test_ollama_chat_think(thinking_server, engine):
    engine.script = [THOUGHT + "Hello!"]
    client = ollama.Client(host=thinking_server.url, timeout=30)
    r = client.chat(model="demo", messages=MESSAGES, think=True)
    assert r.message.thinking == "The user says hi." and r.message.content == "Hello!"
    parts = list(client.chat(model="demo", messages=MESSAGES, think=True, stream=True))
    assert "".join(p.message.thinking or "" for p in parts) == "The user says hi."
    assert "".join(p.message.content for p in parts) == "Hello!"
    r = client.chat(model="demo", messages=MESSAGES, think=False)
    assert r.message.thinking is None and r.message.content == "Hello!"
    assert engine.tokenizer.template_kwargs[-1] == {"enable_thinking": False}


def test_ollama_generate_think_and_capabilities(thinking_server, engine):
    engine.script = [THOUGHT + "Hello!"]
    client = ollama.Client(host=thinking_server.url, timeout=30)
    r = client.generate(model="demo", prompt="Hi", think=True)
    assert r.thinking == "The user says hi." and r.response == "Hello!"
    parts = list(client.generate(model="demo", prompt="Hi", think=True, stream=True))
    assert "".join(p.thinking or "" for p in parts) == "The user says hi."
    assert "thinking" in client.show("demo").capabilities
    bad = httpx.post(f"{thinking_server.url}/api/chat", json={"model": "demo", "messages": MESSAGES, "think": "hard"})
    assert bad.status_code == 400 and bad.json() == {"error": "invalid think value: 'hard'"}
