"""LangChain's ChatOllama on `velollm serve`'s Ollama API (demo: random weights; a scripted engine where the
model must choose a tool call by itself, as Ollama has no tool_choice; a random Qwen3 for thinking).

LangChain reads usage from prompt_eval_count / eval_count, thinking from message.thinking (reasoning=True),
tool calls from message.tool_calls, and sends its options (num_ctx, num_predict, temperature, stop, seed),
keep_alive and format as Ollama's API has them.
"""

from __future__ import annotations

import asyncio
import json
import time

import jsonschema
import ollama
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from tests.langchain.conftest import Demo
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

GOOD = '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "c"}}'
TWO = GOOD + '; {"name": "get_time", "parameters": {"zone": "cet"}}'


def _prompt_tokens(demo: Demo, text: str) -> int:
    return len(demo.tokenizer.encode_chat([{"role": "user", "content": text}]))


def test_invoke_usage_and_metadata(demo):
    m = chat_ollama(demo.url, seed=1, num_predict=8).invoke(PROMPT)
    n = _prompt_tokens(demo, PROMPT)
    meta = m.response_metadata
    assert (meta["prompt_eval_count"], meta["eval_count"]) == (n, 8)
    assert m.usage_metadata == {"input_tokens": n, "output_tokens": 8, "total_tokens": n + 8}
    assert meta["model_name"] == "demo" and meta["done"] is True and meta["done_reason"] == "length"
    assert meta["total_duration"] >= meta["eval_duration"] > 0
    assert chat_ollama(demo.url, seed=1, num_predict=8).invoke(PROMPT).content == m.content  # seeded


def test_stream_batch_and_async_answer_as_invoke(demo):
    llm = chat_ollama(demo.url, seed=2, num_predict=12)
    whole = llm.invoke(PROMPT)
    chunks = list(llm.stream(PROMPT))
    assert len(chunks) > 3 and join(chunks).content == whole.content
    assert join(chunks).usage_metadata == whole.usage_metadata  # from the final chunk only
    prompts = ["one", "two", "three"]
    expected = [llm.invoke(p).content for p in prompts]
    assert [m.content for m in llm.batch(prompts)] == expected

    async def run():
        single = await llm.ainvoke(prompts[0])
        streamed = join([c async for c in llm.astream(prompts[1])])
        return single.content, streamed.content

    assert asyncio.run(run()) == (expected[0], expected[1])


def test_options_reach_the_engine(demo):
    n = _prompt_tokens(demo, PROMPT)
    filled = chat_ollama(demo.url, seed=3, num_ctx=n + 20).invoke(PROMPT)  # no num_predict: fill the context
    assert filled.usage_metadata["output_tokens"] == 20 and filled.response_metadata["done_reason"] == "length"
    greedy = [chat_ollama(demo.url, seed=s, temperature=0, num_predict=10).invoke(PROMPT).content for s in (1, 2)]
    sampled = [chat_ollama(demo.url, seed=s, temperature=1.5, num_predict=10).invoke(PROMPT).content for s in (1, 2)]
    assert greedy[0] == greedy[1] and sampled[0] != sampled[1]
    full = chat_ollama(demo.url, seed=3, num_predict=30).invoke(PROMPT).content
    stop = next(ch for ch in full[3:] if ch.isalpha())
    cut = chat_ollama(demo.url, seed=3, num_predict=30, stop=[stop]).invoke(PROMPT)
    assert cut.content == full[:full.index(stop)] and cut.response_metadata["done_reason"] == "stop"
    # options Ollama has dropped or that do not apply here are ignored, as Ollama does
    legacy = chat_ollama(demo.url, seed=3, num_predict=30, mirostat=0, tfs_z=1.0, num_gpu=1, num_thread=2,
                         repeat_last_n=64).invoke(PROMPT)
    assert legacy.content == full


def test_keep_alive(qwen3):
    client = ollama.Client(host=qwen3.url, timeout=120)
    for keep_alive, seconds in (("7m", 420), (3600, 3600)):
        chat_ollama(qwen3.url, model=qwen3.name, keep_alive=keep_alive, num_predict=2, reasoning=False).invoke("hi")
        [loaded] = [m for m in client.ps().models if m.model == qwen3.name]
        assert abs(loaded.expires_at.timestamp() - time.time() - seconds) < 60


def test_validate_model_on_init(demo):
    assert chat_ollama(demo.url, validate_model_on_init=True, num_predict=2).invoke("hi").content is not None
    with pytest.raises(ValueError, match="not found"):
        chat_ollama(demo.url, model="nobody-has-this", validate_model_on_init=True)


def test_structured_output(demo):
    llm = chat_ollama(demo.url, seed=4, num_predict=200)
    out = llm.with_structured_output(Weather, method="json_schema", include_raw=True).invoke(PROMPT)
    assert isinstance(out["parsed"], Weather) and json.loads(out["raw"].content) == out["parsed"].model_dump()
    raw = chat_ollama(demo.url, seed=4, num_predict=200, format="json").invoke(PROMPT)
    assert isinstance(json.loads(raw.content), dict)


def test_tools_text_answer_runs_to_num_predict(demo):
    """A text answer with tools bound gets the whole num_predict, "length", as without tools (the tool grammar
    used to end it at a quarter of num_predict with "stop")."""
    m = chat_ollama(demo.url, seed=5, num_predict=120).bind_tools(TOOLS).invoke(PROMPT)
    assert not m.tool_calls and m.content
    assert m.usage_metadata["output_tokens"] == 120 and m.response_metadata["done_reason"] == "length"


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_tool_calls(scripted, stream):
    scripted.script(f"Let me look. {TWO}")
    llm = chat_ollama(scripted.url).bind_tools(TOOLS)
    m = join(llm.stream(PROMPT)) if stream else llm.invoke(PROMPT)
    check_calls(m.tool_calls)
    assert [(c["name"], c["args"]) for c in m.tool_calls] == [("get_weather", {"city": "Paris", "unit": "c"}),
                                                              ("get_time", {"zone": "cet"})]
    assert m.content.strip() == "Let me look." and m.response_metadata["done_reason"] == "stop"


def test_structured_output_by_function_calling(scripted):
    scripted.script('{"name": "Weather", "parameters": {"city": "Paris", "degrees": 21, "sky": "sunny"}}')
    out = chat_ollama(scripted.url).with_structured_output(Weather, method="function_calling").invoke(PROMPT)
    assert out == Weather(city="Paris", degrees=21, sky="sunny")


def test_tool_message_round_trip_renders_as_openai(scripted):
    """LangChain's ToolMessages reach the server without ids or names (the ollama client drops tool_call_id):
    the results answer the calls in order, so the prompt is the one ChatOpenAI's ids give."""
    history = [HumanMessage(PROMPT),
               AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "c1"},
                                         {"name": "get_time", "args": {"zone": "cet"}, "id": "c2"}]),
               ToolMessage("sunny", tool_call_id="c1"), ToolMessage("noon", tool_call_id="c2")]
    scripted.script("It is sunny.")
    m = chat_ollama(scripted.url).bind_tools(TOOLS).invoke(history)
    assert m.content == "It is sunny." and not m.tool_calls
    chat_openai(scripted.url).bind_tools(TOOLS).invoke(history)
    ollama_prompt, openai_prompt = scripted.prompt(0), scripted.prompt(1)
    assert "Result of get_weather:\nsunny" in ollama_prompt and "Result of get_time:\nnoon" in ollama_prompt
    # the tools' listing differs only in key order (the ollama client rebuilds the schemas); the history not
    assert ollama_prompt.split(f"<user>{PROMPT}")[1] == openai_prompt.split(f"<user>{PROMPT}")[1]


def test_reasoning(qwen3):
    """reasoning=True: the thinking goes to additional_kwargs['reasoning_content'], never into the content; a
    random Qwen3 thinks under a grammar (format), which ends the thinking and then constrains the answer."""
    schema = Weather.model_json_schema()
    llm = chat_ollama(qwen3.url, model=qwen3.name, seed=6, num_predict=160, reasoning=True, format=schema)
    m = llm.invoke(PROMPT)
    thinking = m.additional_kwargs["reasoning_content"]
    assert thinking and "<think>" not in m.content and "</think>" not in m.content
    jsonschema.validate(json.loads(m.content), schema)
    streamed = join(llm.stream(PROMPT))
    assert (streamed.additional_kwargs["reasoning_content"], streamed.content) == (thinking, m.content)
    messages = [{"role": "user", "content": PROMPT}]
    assert m.usage_metadata["input_tokens"] == len(qwen3.tokenizer.encode_chat(messages))
    off = chat_ollama(qwen3.url, model=qwen3.name, seed=6, num_predict=8, reasoning=False).invoke(PROMPT)
    assert "reasoning_content" not in off.additional_kwargs
    # think=false renders Qwen3's no-thinking prompt (an empty think block)
    no_think = qwen3.tokenizer.encode_chat(messages, enable_thinking=False)
    assert off.usage_metadata["input_tokens"] == len(no_think) > m.usage_metadata["input_tokens"]


def test_images_on_a_model_without_vision(demo):
    """No vision fixture here: an image on a text model is Ollama's 400, through LangChain's content blocks."""
    message = HumanMessage(content=[{"type": "text", "text": "What is this?"},
                                    {"type": "image_url", "image_url": f"data:image/png;base64,{PNG}"}])
    with pytest.raises(ollama.ResponseError) as err:
        chat_ollama(demo.url).invoke([message])
    assert err.value.status_code == 400 and 'does not support images' in err.value.error


def test_thinking_in_the_history_reaches_the_template(qwen3):
    """ChatOllama sends an AIMessage's reasoning_content back as message.thinking; Qwen3's template renders the
    thinking of a tool loop's calling turn (as /v1 renders reasoning_content): it used to be dropped on /api."""
    call = {"name": "get_weather", "args": {"city": "Paris"}, "id": "c1"}

    def history(thinking: str | None) -> list:
        kwargs = {"reasoning_content": thinking} if thinking else {}
        return [HumanMessage(PROMPT), AIMessage("", additional_kwargs=kwargs, tool_calls=[call]),
                ToolMessage("sunny", tool_call_id="c1")]

    def input_tokens(thinking: str | None) -> int:
        llm = chat_ollama(qwen3.url, model=qwen3.name, num_predict=1, reasoning=False).bind_tools(TOOLS)
        return llm.invoke(history(thinking)).usage_metadata["input_tokens"]

    thought = "The user wants the weather, so I call get_weather."
    wire = [{"role": "user", "content": PROMPT},
            {"role": "assistant", "content": "", "reasoning_content": thought, "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": "sunny"}]
    tok = qwen3.tokenizer
    rendered = tok.apply_chat_template(wire, enable_thinking=False)
    assert f"<think>\n{thought}\n</think>" in rendered
    grows = len(tok.encode_chat(wire, enable_thinking=False)) - len(tok.encode_chat(
        [{k: v for k, v in m.items() if k != "reasoning_content"} for m in wire], enable_thinking=False))
    assert grows > 0 and input_tokens(thought) - input_tokens(None) == grows
