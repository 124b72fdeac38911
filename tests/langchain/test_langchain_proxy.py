"""LangChain through `velollm serve --proxy-only` in front of an Ollama upstream (another VeloLLM).

ChatOllama's requests pass through; ChatOpenAI's are converted to /api/chat as Ollama's own OpenAI layer
does (temperature and top_p default to 1, no tool_choice: Ollama has none), so a seeded answer through the
proxy equals ChatOllama's straight from the upstream with those options.
"""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from tests.langchain.lc_tools import (
    PNG,
    PROMPT,
    TOOLS,
    Weather,
    chat_ollama,
    chat_openai,
    check_calls,
    join,
)
from tests.ollama_upstream import fake_ollama
from tests.serve_process import start_serve, stop_serve

TWO = ('{"name": "get_weather", "parameters": {"city": "Paris"}}; '
       '{"name": "get_time", "parameters": {"zone": "cet"}}')
CALLS = [("get_weather", {"city": "Paris"}), ("get_time", {"zone": "cet"})]


def test_ollama_invoke_and_stream_pass_through(demo, demo_proxy):
    direct = chat_ollama(demo.url, seed=1, num_predict=10).invoke(PROMPT)
    proxied = chat_ollama(demo_proxy, seed=1, num_predict=10).invoke(PROMPT)
    assert proxied.content == direct.content and proxied.usage_metadata == direct.usage_metadata
    streamed = join(chat_ollama(demo_proxy, seed=1, num_predict=10).stream(PROMPT))
    assert streamed.content == direct.content and streamed.usage_metadata == direct.usage_metadata


def test_openai_invoke_and_stream_converted(demo, demo_proxy):
    upstream = chat_ollama(demo.url, seed=2, num_predict=10, temperature=1.0, top_p=1.0).invoke(PROMPT)
    m = chat_openai(demo_proxy, seed=2, max_tokens=10).invoke(PROMPT)
    assert m.content == upstream.content
    assert (m.usage_metadata["input_tokens"], m.usage_metadata["output_tokens"]) == (
        upstream.usage_metadata["input_tokens"], 10)
    assert m.response_metadata["finish_reason"] == "length" and m.response_metadata["model_name"] == "demo"
    assert m.response_metadata["system_fingerprint"] == "fp_ollama"  # as Ollama's own OpenAI layer
    chunks = list(chat_openai(demo_proxy, seed=2, max_tokens=10, stream_usage=True).stream(PROMPT))
    assert join(chunks).content == upstream.content
    assert join(chunks).response_metadata["system_fingerprint"] == "fp_ollama"
    [usage] = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert usage["output_tokens"] == 10


def test_structured_output_through_the_proxy(demo_proxy):
    for llm in (chat_ollama(demo_proxy, seed=3, num_predict=200), chat_openai(demo_proxy, seed=3, max_tokens=200)):
        out = llm.with_structured_output(Weather, method="json_schema", include_raw=True).invoke(PROMPT)
        assert isinstance(out["parsed"], Weather)  # the format reached the upstream's grammar
        assert json.loads(out["raw"].content) == out["parsed"].model_dump()


def test_tool_calls_through_the_proxy(scripted, scripted_proxy):
    scripted.script(TWO)
    m = chat_ollama(scripted_proxy).bind_tools(TOOLS).invoke(PROMPT)
    assert [(c["name"], c["args"]) for c in m.tool_calls] == CALLS
    streamed = join(chat_ollama(scripted_proxy).bind_tools(TOOLS).stream(PROMPT))
    assert [(c["name"], c["args"]) for c in streamed.tool_calls] == CALLS

    for stream in (False, True):
        llm = chat_openai(scripted_proxy).bind_tools(TOOLS)
        m = join(llm.stream(PROMPT)) if stream else llm.invoke(PROMPT)
        check_calls(m.tool_calls)
        assert [(c["name"], c["args"]) for c in m.tool_calls] == CALLS
        assert m.response_metadata["finish_reason"] == "tool_calls" and len({c["id"] for c in m.tool_calls}) == 2

    responses = chat_openai(scripted_proxy, use_responses_api=True).bind_tools(TOOLS)
    for m in (responses.invoke(PROMPT), join(responses.stream(PROMPT))):
        assert [(c["name"], c["args"]) for c in m.tool_calls] == CALLS


def test_tool_message_round_trip_through_the_proxy(scripted, scripted_proxy):
    history = [HumanMessage(PROMPT),
               AIMessage("", tool_calls=[{"name": n, "args": a, "id": f"call_{i}"} for i, (n, a) in enumerate(CALLS)]),
               ToolMessage("sunny", tool_call_id="call_0"), ToolMessage("noon", tool_call_id="call_1")]
    engine = scripted.script("It is sunny.")
    assert chat_openai(scripted_proxy).bind_tools(TOOLS).invoke(history).content == "It is sunny."
    assert chat_ollama(scripted_proxy).bind_tools(TOOLS).invoke(history).content == "It is sunny."
    assert engine.num_calls == 2
    for i in range(2):  # converted (ids to tool_name) or passed through (no ids: the calls' order)
        prompt = scripted.prompt(i)
        assert "Result of get_weather:\nsunny" in prompt and "Result of get_time:\nnoon" in prompt
        assert '{"name": "get_weather", "parameters": {"city": "Paris"}}' in prompt


@pytest.fixture(scope="module")
def vision_proxy(tmp_path_factory):
    """A vision and thinking model on an Ollama stand-in (tests/ollama_upstream.py: it answers how many images
    of how many base64 characters the last message carried), behind `velollm serve --proxy-only`."""
    with fake_ollama(["seer:latest"]) as upstream:
        proc, url, _, _ = start_serve(tmp_path_factory.mktemp("langchain-vision"), "--proxy-only", "--upstream", upstream)
        try:
            yield url
        finally:
            stop_serve(proc)


def test_images_and_thinking_through_the_proxy(vision_proxy):
    """LangChain's image content blocks reach an upstream vision model as Ollama's base64 `images` (ChatOllama
    passes them; ChatOpenAI's image_url data URLs are converted), and its thinking comes back as LangChain's."""
    message = HumanMessage(content=[{"type": "text", "text": "What is this?"},
                                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}])
    seen = f"I see 1 image(s) of {len(PNG)} base64 characters; "
    native = chat_ollama(vision_proxy, model="seer").invoke([message])
    assert native.content.startswith(seen) and "What is this?" in native.content
    thinking = chat_ollama(vision_proxy, model="seer", reasoning=True).invoke([message])
    assert thinking.additional_kwargs["reasoning_content"] == "The user says hi."
    assert thinking.content == native.content
    # streamed: the stand-in always streams, as Ollama does unless told stream=false
    converted = join(chat_openai(vision_proxy, model="seer").stream([message]))
    assert converted.content == seen + "the text was 'What is this?'"
