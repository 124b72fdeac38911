"""A live `velollm serve` on a random Qwen3 with Qwen3's real tokenizer and chat template.

A random model does not think on its own; under a grammar it must: with thinking on (the default for a
thinking template, as in Ollama) JSON and tool calls are constrained only after `</think>`, and the
thinking gets a share of max_tokens, so the answer is always complete. Official openai and ollama clients.
"""

from __future__ import annotations

import json

import jsonschema
import ollama
import openai
import pytest

from tests.serve_process import start_serve, stop_serve

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
          "required": ["city", "days"], "additionalProperties": False}
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}}
MESSAGES = [{"role": "user", "content": "Weather in Paris for 3 days, as JSON."}]


@pytest.fixture(scope="module")
def qwen3_server(tiny_qwen3, tmp_path_factory):
    proc, url, log, _ = start_serve(tmp_path_factory.mktemp("qwen3-live"), "--model", str(tiny_qwen3),
                                    "--served-model-name", "qwen3-tiny", "--max-model-len", "1024",
                                    "--kv-cache-memory", "64MiB", "--device", "cpu")
    try:
        yield url
    finally:
        stop_serve(proc)


@pytest.fixture
def oai(qwen3_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{qwen3_server}/v1", api_key="x", max_retries=0, timeout=120)


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_think_with_a_schema(qwen3_server, stream):
    client = ollama.Client(host=qwen3_server, timeout=120)
    parts = client.chat(model="qwen3-tiny", messages=MESSAGES, think=True, format=SCHEMA, stream=stream,
                        options={"seed": 1, "num_predict": 160})
    parts = list(parts) if stream else [parts]
    thinking = "".join(p.message.thinking or "" for p in parts)
    content = "".join(p.message.content for p in parts)
    assert thinking  # the grammar opened and closed the thinking; it went to message.thinking
    jsonschema.validate(json.loads(content), SCHEMA)
    assert "thinking" in client.show("qwen3-tiny").capabilities


def test_ollama_think_false_renders_no_think_mode(qwen3_server):
    client = ollama.Client(host=qwen3_server, timeout=120)
    r = client.chat(model="qwen3-tiny", messages=MESSAGES, think=False, format=SCHEMA,
                    options={"seed": 2, "num_predict": 160})
    assert r.message.thinking is None
    jsonschema.validate(json.loads(r.message.content), SCHEMA)
    r = client.generate(model="qwen3-tiny", prompt="Hi", think=True, format="json", options={"seed": 3, "num_predict": 96})
    assert r.thinking and isinstance(json.loads(r.response), dict)


def test_openai_json_schema_after_thinking(oai):
    r = oai.chat.completions.create(model="qwen3-tiny", messages=MESSAGES, max_tokens=160, seed=4, response_format={
        "type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA}})
    message = r.choices[0].message
    jsonschema.validate(json.loads(message.content), SCHEMA)
    assert message.reasoning_content and r.choices[0].finish_reason == "stop"
    # `</think>` is one token: everything up to it is thinking.
    assert 0 < r.usage.completion_tokens_details.reasoning_tokens < r.usage.completion_tokens


def test_responses_tool_round_trip_and_stream(oai):
    # Greedy: a sampled first answer could be cut inside its call and retried, and a retry's prompt (the question,
    # the failed answer, the correction) is what usage counts, longer than the second turn's (CI saw 283 > 206).
    first = oai.responses.create(model="qwen3-tiny", input="Weather in Paris?", tools=[WEATHER],
                                 tool_choice="required", max_output_tokens=160, temperature=0)
    kinds = [o.type for o in first.output]
    assert kinds[0] == "reasoning" and kinds[-1] == "function_call"
    call = first.output[-1]
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    events = list(oai.responses.create(
        model="qwen3-tiny", previous_response_id=first.id, max_output_tokens=24, stream=True, tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"}]))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] in ("response.completed", "response.incomplete")
    final = events[-1].response
    # The stored conversation (question, call, result) went back in: a longer prompt than the first.
    assert final.previous_response_id == first.id and final.usage.input_tokens > first.usage.input_tokens
    assert oai.responses.retrieve(final.id).id == final.id


def test_responses_cut_by_max_output_tokens(oai):
    r = oai.responses.create(model="qwen3-tiny", input="Hi", max_output_tokens=8, reasoning={"effort": "none"},
                             temperature=1.0)
    if r.status == "completed":  # the random model stopped on its own within 8 tokens
        assert r.usage.output_tokens <= 8
    else:
        assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
        assert r.usage.output_tokens == 8


@pytest.mark.parametrize("stream", [False, True])
def test_responses_logprobs_leave_the_thinking_out(oai, stream):
    """With include message.output_text.logprobs, the output text's logprobs began with the thinking's
    tokens (<think>...</think>), which belong to the reasoning item."""
    kw = dict(model="qwen3-tiny", input="Weather in Paris as JSON", max_output_tokens=120, temperature=0,
              text={"format": {"type": "json_schema", "name": "w", "schema": SCHEMA}}, top_logprobs=1,
              include=["message.output_text.logprobs"])
    if stream:
        events = list(oai.responses.create(**kw, stream=True))
        final = events[-1].response
        deltas = [lp.token for e in events if e.type == "response.output_text.delta" for lp in e.logprobs]
        assert "".join(deltas) == final.output_text
    else:
        final = oai.responses.create(**kw)
    assert [o.type for o in final.output] == ["reasoning", "message"]
    tokens = [lp.token for lp in final.output[1].content[0].logprobs]
    assert tokens and not {"<think>", "</think>"} & set(tokens)
    assert final.output_text.strip() in "".join(tokens)
