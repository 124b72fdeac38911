"""LangChain's ChatOpenAI (Chat Completions and Responses API) on `velollm serve` (demo: random weights).

Answers are checked against what the server counted or was asked for: usage against the prompt the
template renders and max_tokens, seeded answers against each other (invoke = stream = batch = async),
tool calls against their tools' schemas, structured output against the pydantic model.
"""

from __future__ import annotations

import asyncio
import json

import jsonschema
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool

from tests.langchain.conftest import Demo
from tests.langchain.lc_tools import (
    PROMPT,
    SCHEMAS,
    TOOLS,
    Weather,
    chat_openai,
    check_calls,
    join,
)
from velollm.api.chat_messages import normalize_messages
from velollm.tools.tool_session import ToolSession


def _prompt_tokens(demo: Demo, text: str) -> int:
    return len(demo.tokenizer.encode_chat([{"role": "user", "content": text}]))


def test_invoke_usage_and_metadata(demo):
    m = chat_openai(demo.url, seed=1, max_tokens=8).invoke(PROMPT)
    assert isinstance(m, AIMessage) and m.content
    n = _prompt_tokens(demo, PROMPT)
    assert m.usage_metadata["input_tokens"] == n and m.usage_metadata["output_tokens"] == 8
    assert m.usage_metadata["total_tokens"] == n + 8
    meta = m.response_metadata
    assert meta["model_name"] == "demo" and meta["finish_reason"] == "length" and meta["id"].startswith("chatcmpl-")
    assert meta["token_usage"]["prompt_tokens"] == n and "system_fingerprint" in meta
    assert chat_openai(demo.url, seed=1, max_tokens=8).invoke(PROMPT).content == m.content  # seeded


def test_stream_with_usage_equals_invoke(demo):
    llm = chat_openai(demo.url, seed=2, max_tokens=12, stream_usage=True)
    chunks = list(llm.stream(PROMPT))
    whole = llm.invoke(PROMPT)
    assert len(chunks) > 3 and join(chunks).content == whole.content
    [usage] = [c.usage_metadata for c in chunks if c.usage_metadata]  # stream_options.include_usage: one chunk
    assert (usage["input_tokens"], usage["output_tokens"]) == (_prompt_tokens(demo, PROMPT), 12)
    assert join(chunks).response_metadata["finish_reason"] == "length"


def test_batch_and_async_answer_as_invoke(demo):
    llm = chat_openai(demo.url, seed=3, max_tokens=6)
    prompts = ["one", "two", "three"]
    expected = [llm.invoke(p).content for p in prompts]
    assert [m.content for m in llm.batch(prompts)] == expected

    async def run():
        # one event loop: LangChain keeps its async HTTP client for the process
        single = await llm.ainvoke(prompts[0])
        streamed = join([c async for c in llm.astream(prompts[1])])
        batched = await llm.abatch(prompts)
        return single.content, streamed.content, [m.content for m in batched]

    assert asyncio.run(run()) == (expected[0], expected[1], expected)


def test_stop_n_and_logprobs(demo):
    full = chat_openai(demo.url, seed=4, max_tokens=30).invoke(PROMPT).content
    stop = next(ch for ch in full[3:] if ch.isalpha())
    cut = chat_openai(demo.url, seed=4, max_tokens=30, stop=[stop]).invoke(PROMPT)
    assert cut.content == full[:full.index(stop)] and cut.response_metadata["finish_reason"] == "stop"

    result = chat_openai(demo.url, seed=4, max_tokens=5, n=2).generate([[HumanMessage(PROMPT)]])
    assert len(result.generations[0]) == 2
    assert result.llm_output["token_usage"]["completion_tokens"] == 10  # both choices, 5 tokens each

    m = chat_openai(demo.url, seed=4, max_tokens=9, logprobs=True, top_logprobs=2).invoke(PROMPT)
    content = m.response_metadata["logprobs"]["content"]
    assert len(content) == m.usage_metadata["output_tokens"] == 9
    assert bytes(b for t in content for b in t["bytes"]).decode(errors="replace") == m.content
    for t in content:
        tops = [x["logprob"] for x in t["top_logprobs"]]
        assert len(tops) == 2 and tops[0] >= tops[1] and t["logprob"] <= tops[0] + 1e-5


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_bind_tools(demo, stream):
    def ask(**kw):
        llm = chat_openai(demo.url, seed=5, max_tokens=200).bind_tools(TOOLS, **kw)
        return join(llm.stream(PROMPT)) if stream else llm.invoke(PROMPT)

    m = ask(tool_choice="any")
    check_calls(m.tool_calls)
    assert m.response_metadata["finish_reason"] == "tool_calls" and all(c["id"].startswith("call_") for c in m.tool_calls)
    check_calls(ask(tool_choice="get_time").tool_calls, {"get_time"})
    assert len(ask(tool_choice="any", parallel_tool_calls=False).tool_calls) == 1


def test_parallel_calls_and_a_tool_message_round_trip(demo):
    seeds = range(6)
    answers = [chat_openai(demo.url, seed=s, max_tokens=256).bind_tools(TOOLS, tool_choice="any").invoke(PROMPT)
               for s in seeds]
    for a in answers:
        check_calls(a.tool_calls)
    assert max(len(a.tool_calls) for a in answers) > 1  # the grammar's parallel branch, somewhere

    first = answers[0]
    history = [HumanMessage(PROMPT), first, *(ToolMessage(f"result {i}", tool_call_id=c["id"])
                                              for i, c in enumerate(first.tool_calls))]
    second = chat_openai(demo.url, seed=6, max_tokens=8).bind_tools(TOOLS).invoke(history)
    # The server rendered the calls and their results through the model's template: count that prompt.
    wire = [{"role": "user", "content": PROMPT},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": json.dumps(c["args"])}}
                for c in first.tool_calls]},
            *({"role": "tool", "tool_call_id": c["id"], "content": f"result {i}"} for i, c in enumerate(first.tool_calls))]
    tools = [{"type": "function", "function": {"name": n, "parameters": p}} for n, p in SCHEMAS.items()]
    session = ToolSession(demo.tokenizer, tools, "auto", model_type="llama")
    text = session.render_prompt(normalize_messages(wire), add_generation_prompt=True)
    assert "<|start_header_id|>ipython<|end_header_id|>\n\nresult 0<|eot_id|>" in text
    assert second.usage_metadata["input_tokens"] > first.usage_metadata["input_tokens"]
    unbound = chat_openai(demo.url, seed=6, max_tokens=8).invoke(history)  # no tools: the calls still render
    assert unbound.usage_metadata["input_tokens"] < second.usage_metadata["input_tokens"]


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_with_structured_output(demo, method):
    llm = chat_openai(demo.url, seed=7, max_tokens=200)
    out = llm.with_structured_output(Weather, method=method, strict=None if method == "json_mode" else True,
                                     include_raw=True).invoke(
        f"{PROMPT} Answer in JSON.")
    raw = out["raw"]
    if method == "json_mode":
        # json_object constrains to JSON, not to the model (LangChain sends no schema): a random model's object
        # parses, whatever its keys.
        assert isinstance(json.loads(raw.content), dict)
        return
    assert isinstance(out["parsed"], Weather) and out["parsing_error"] is None
    if method == "json_schema":
        assert json.loads(raw.content) == out["parsed"].model_dump()
    else:
        [call] = raw.tool_calls
        assert call["name"] == "Weather" and call["args"] == out["parsed"].model_dump()


def test_tools_answer_text_runs_to_max_tokens(demo):
    """tool_choice="auto" with a text answer: the whole max_tokens, "length", as without tools (the tool grammar
    used to end free text at a quarter of max_tokens with "stop")."""
    m = chat_openai(demo.url, seed=8, max_tokens=120).bind_tools(TOOLS).invoke(PROMPT)
    assert not m.tool_calls and m.content
    assert m.usage_metadata["output_tokens"] == 120 and m.response_metadata["finish_reason"] == "length"


# --- the Responses API (use_responses_api=True); the openai SDK's Responses.create takes no seed ---------------


def _responses(demo: Demo, **kw):
    kw.setdefault("temperature", 0)
    return chat_openai(demo.url, use_responses_api=True, **kw)


def _text(m: AIMessage) -> str:
    return "".join(b["text"] for b in m.content if b.get("type") == "text")


def test_responses_invoke_and_stream(demo):
    m = _responses(demo, max_tokens=10).invoke(PROMPT)
    assert m.id.startswith("resp_") and _text(m)
    assert m.usage_metadata["input_tokens"] == _prompt_tokens(demo, PROMPT)
    assert m.usage_metadata["output_tokens"] == 10
    assert m.response_metadata["status"] == "incomplete"
    assert m.response_metadata["incomplete_details"] == {"reason": "max_output_tokens"}
    streamed = join(_responses(demo, max_tokens=10).stream(PROMPT))
    assert _text(streamed) == _text(m) and streamed.usage_metadata["output_tokens"] == 10


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_responses_tools_and_round_trip(demo, stream):
    llm = _responses(demo, max_tokens=200).bind_tools(TOOLS, tool_choice="any")
    first = join(llm.stream(PROMPT)) if stream else llm.invoke(PROMPT)
    check_calls(first.tool_calls)
    assert [b["call_id"] for b in first.content if b.get("type") == "function_call"] == [c["id"] for c in first.tool_calls]
    # function_call items and function_call_output items go back as the next turn's input
    history = [HumanMessage(PROMPT), first, *(ToolMessage("sunny", tool_call_id=c["id"]) for c in first.tool_calls)]
    second = _responses(demo, max_tokens=6).bind_tools(TOOLS, tool_choice="none").invoke(history)
    assert _text(second) and not second.tool_calls
    assert second.usage_metadata["input_tokens"] > first.usage_metadata["input_tokens"]


def test_responses_structured_output_and_previous_response_id(demo):
    weather = _responses(demo, max_tokens=200).with_structured_output(Weather, method="json_schema", strict=True)
    assert isinstance(weather.invoke(PROMPT), Weather)

    llm = _responses(demo, max_tokens=6, use_previous_response_id=True)
    first = llm.invoke(PROMPT)
    # LangChain sends only the new message with previous_response_id: the server's store supplies the rest.
    second = llm.invoke([HumanMessage(PROMPT), first, HumanMessage("And tomorrow?")])
    alone = _responses(demo, max_tokens=6).invoke("And tomorrow?")
    assert second.usage_metadata["input_tokens"] > alone.usage_metadata["input_tokens"] + first.usage_metadata[
        "output_tokens"]


def test_reasoning_model(qwen3):
    """A thinking model (Qwen3's template) under a grammar: it thinks first, then answers. Chat Completions:
    LangChain's ChatOpenAI does not read `reasoning_content` (by design: provider packages do), but the thinking
    stays out of the content and is counted; the Responses API gives LangChain reasoning items."""
    schema = Weather.model_json_schema()
    llm = chat_openai(qwen3.url, model=qwen3.name, seed=1, max_tokens=160)
    out = llm.with_structured_output(Weather, method="json_schema", include_raw=True).invoke(PROMPT)
    raw = out["raw"]
    assert isinstance(out["parsed"], Weather) and "<think>" not in raw.content
    jsonschema.validate(json.loads(raw.content), schema)
    assert 0 < raw.usage_metadata["output_token_details"]["reasoning"] < raw.usage_metadata["output_tokens"]

    resp = chat_openai(qwen3.url, model=qwen3.name, use_responses_api=True, temperature=0, max_tokens=160)
    m = resp.bind_tools(TOOLS, tool_choice="any").invoke(PROMPT)
    check_calls(m.tool_calls)
    [reasoning] = [b for b in m.content if b.get("type") == "reasoning"]
    assert reasoning["content"][0]["type"] == "reasoning_text" and reasoning["content"][0]["text"]
    assert m.usage_metadata["output_token_details"]["reasoning"] > 0
    streamed = join(resp.bind_tools(TOOLS, tool_choice="any").stream(PROMPT))
    assert [c["args"] for c in streamed.tool_calls] == [c["args"] for c in m.tool_calls]
    # langchain-openai 1.8 aggregates only reasoning *summaries* from a stream (what OpenAI's own models send) and
    # drops response.reasoning_text.delta events (raw thinking, as vLLM and VeloLLM send): the block arrives
    # without its text. The server does stream it, and the same text as without streaming:
    assert [b for b in streamed.content if b.get("type") == "reasoning"]
    events = openai.OpenAI(base_url=f"{qwen3.url}/v1", api_key="x", max_retries=0).responses.create(
        model=qwen3.name, input=PROMPT, tools=[{"type": "function", **convert_to_openai_tool(t)["function"]} for t in TOOLS],
        tool_choice="required", temperature=0, max_output_tokens=160, stream=True)
    thinking = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert thinking == reasoning["content"][0]["text"]


def test_stateless_reasoning_replay(qwen3):
    """store=False: LangChain sends reasoning items back only when they carry encrypted_content (include=
    ["reasoning.encrypted_content"]), also from a stream whose reasoning text it dropped; the tool loop's next
    turn then renders the thinking as when LangChain replays it from a stored response."""

    def next_turn_input_tokens(stream: bool, **kw) -> int:
        llm = chat_openai(qwen3.url, model=qwen3.name, use_responses_api=True, temperature=0, max_tokens=160, **kw)
        first = llm.bind_tools(TOOLS, tool_choice="any")
        first = join(first.stream(PROMPT)) if stream else first.invoke(PROMPT)
        check_calls(first.tool_calls)
        history = [HumanMessage(PROMPT), first, *(ToolMessage("sunny", tool_call_id=c["id"]) for c in first.tool_calls)]
        second = llm.bind(max_output_tokens=2).bind_tools(TOOLS, tool_choice="none").invoke(history)
        return second.usage_metadata["input_tokens"]

    stored = next_turn_input_tokens(False)
    encrypted = next_turn_input_tokens(True, store=False, include=["reasoning.encrypted_content"])
    dropped = next_turn_input_tokens(False, store=False)
    assert encrypted == stored > dropped  # Qwen3's template renders the thinking of the turn that called


def test_context_overflow_error(demo):
    """A prompt past the context: OpenAI's 400 with code context_length_exceeded (param messages / input)."""
    from langchain_core.exceptions import ContextOverflowError

    errors = []
    for responses in (False, True):
        with pytest.raises(openai.BadRequestError) as err:
            chat_openai(demo.url, use_responses_api=responses, max_tokens=4).invoke("word " * 3000)
        assert err.value.code == "context_length_exceeded" and err.value.status_code == 400
        assert err.value.param == ("input" if responses else "messages")
        assert "maximum context length is 2048 tokens" in err.value.message
        errors.append(err.value)
    if not all(isinstance(e, ContextOverflowError) for e in errors):
        pytest.skip("langchain-openai 1.8 classifies context overflows by 'context_length_exceeded' in str(error), "
                    "which openai>=3 no longer writes there (only the error's message): OpenAI's own errors are not "
                    "classified either; the code is in error.code")
