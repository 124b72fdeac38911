"""Constrained decoding through the official clients against a real `velollm serve` on `demo`.

The demo model has random weights, so whatever comes out valid came from the grammar. Over 120
JSON Schemas (tests/tools/schemas.py: nested objects, arrays, enums, bounded numbers, required and
optional fields, formats, patterns) every answer parses, validates against its schema, and ends
by itself well before max_tokens: openai SDK with tool_choice "required", a named tool and
response_format json_schema, streaming and not; ollama client with `format` (schema and "json").
Requests go out concurrently (the server batches them) so the sweep stays short on two cores.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema
import ollama
import openai
import pytest

from tests.api.conftest import start_live, stop_live
from tests.tools.schemas import ALL

MAX_TOKENS = 512  # the longest minimal answer (schema 110: nested uuid arrays) is ~250 tokens
CONCURRENCY = 64
OBJECTS = [s for s in ALL if s.get("type") == "object"]  # tool parameters are objects
DECOY = {"type": "object", "properties": {"q": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["q"]}
MESSAGES = [{"role": "user", "content": "Use the tool."}]


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    proc, base, log = start_live(tmp_path_factory.mktemp("tools"), "--max-model-len", "4096",
                                 "--kv-cache-memory", "256MiB")
    try:
        yield base
    finally:
        stop_live(proc)
    assert proc.returncode in (0, -15), log.read_text()[-3000:]


def validate(schema: dict[str, Any], text: str) -> None:
    cls = jsonschema.validators.validator_for(schema)
    cls(schema, format_checker=cls.FORMAT_CHECKER).validate(json.loads(text))


async def gather_limited(coros: list) -> list:
    sem = asyncio.Semaphore(CONCURRENCY)

    async def run(coro):
        async with sem:
            return await coro

    return await asyncio.gather(*(run(c) for c in coros))


def _tools(i: int, schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": f"tool_{i}", "description": "a tool", "parameters": schema}},
            {"type": "function", "function": {"name": "decoy", "parameters": DECOY}}]


async def _openai_call(client: openai.AsyncOpenAI, i: int, stream: bool, **kw: Any) -> dict[str, Any]:
    """One chat completion, streamed or not, as {content, calls: [(name, arguments)], finish, tokens}."""
    common = dict(model="demo", messages=MESSAGES, max_tokens=MAX_TOKENS, seed=i, **kw)
    if not stream:
        r = await client.chat.completions.create(**common)
        m = r.choices[0].message
        return {"content": m.content, "finish": r.choices[0].finish_reason, "tokens": r.usage.completion_tokens,
                "calls": [(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or []]}
    calls: dict[int, list[str]] = {}
    content, finish, tokens = "", None, None
    async for chunk in await client.chat.completions.create(**common, stream=True,
                                                             stream_options={"include_usage": True}):
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
            for d in choice.delta.tool_calls or []:
                entry = calls.setdefault(d.index, ["", "", ""])
                if d.id:
                    assert not entry[0], "a call's id is sent once, first"
                    entry[0] = d.id
                if d.function and d.function.name:
                    entry[1] += d.function.name
                if d.function and d.function.arguments:
                    entry[2] += d.function.arguments
    return {"content": content or None, "finish": finish, "tokens": tokens,
            "calls": [tuple(calls[k]) for k in sorted(calls)]}


def _check_budget(out: dict[str, Any]) -> None:
    assert out["finish"] != "length" and out["tokens"] < MAX_TOKENS, out


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("choice", ["required", "named"])
def test_tool_calls_are_schema_valid(url, choice, stream):
    async def run():
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=300)
        coros = []
        for i, schema in enumerate(OBJECTS):
            tool_choice = "required" if choice == "required" else {"type": "function",
                                                                   "function": {"name": f"tool_{i}"}}
            coros.append(_openai_call(client, i, stream, tools=_tools(i, schema), tool_choice=tool_choice))
        return await gather_limited(coros)

    outs = asyncio.run(run())
    assert len(outs) >= 100
    names = set()
    for i, (schema, out) in enumerate(zip(OBJECTS, outs)):
        _check_budget(out)
        assert out["finish"] == "tool_calls" and out["calls"], out
        assert not out["content"], out  # a forced answer is calls only
        if choice == "named":
            assert [c[1] for c in out["calls"]] == [f"tool_{i}"], out
        assert len({c[0] for c in out["calls"]}) == len(out["calls"]) and all(c[0] for c in out["calls"])
        for _, name, arguments in out["calls"]:
            assert name in (f"tool_{i}", "decoy"), out
            validate(schema if name != "decoy" else DECOY, arguments)
            names.add(name == "decoy")
    if choice == "required":
        assert names == {True, False}, "required picks among the tools (both chosen somewhere)"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_response_format_json_schema_is_valid(url, stream):
    async def run():
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=300)
        return await gather_limited([
            _openai_call(client, i, stream, response_format={"type": "json_schema", "json_schema": {
                "name": f"s{i}", "schema": schema, "strict": i % 2 == 0}})
            for i, schema in enumerate(ALL)])

    outs = asyncio.run(run())
    for schema, out in zip(ALL, outs):
        _check_budget(out)
        assert out["finish"] == "stop" and not out["calls"], out
        validate(schema, out["content"])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_ollama_format_schema_is_valid(url, stream):
    async def one(client: ollama.AsyncClient, i: int, fmt: Any) -> tuple[str, Any]:
        options = {"num_predict": MAX_TOKENS, "seed": i}
        if not stream:
            r = await client.chat(model="demo", messages=MESSAGES, format=fmt, options=options)
            return r.message.content, r
        parts = [p async for p in await client.chat(model="demo", messages=MESSAGES, format=fmt, options=options,
                                                     stream=True)]
        return "".join(p.message.content for p in parts), parts[-1]

    async def run():
        client = ollama.AsyncClient(host=url, timeout=300)
        return await gather_limited([one(client, i, s) for i, s in enumerate(ALL)] +
                                    [one(client, 1000 + i, "json") for i in range(8)])

    outs = asyncio.run(run())
    for i, (text, final) in enumerate(outs):
        assert final.done and final.done_reason == "stop" and final.eval_count < MAX_TOKENS, final
        if i < len(ALL):
            validate(ALL[i], text)
        else:
            assert isinstance(json.loads(text), dict)


def test_ollama_generate_format_schema(url):
    client = ollama.Client(host=url, timeout=120)
    schema = ALL[5]
    r = client.generate(model="demo", prompt="tags?", format=schema, options={"num_predict": MAX_TOKENS, "seed": 3})
    assert r.done_reason == "stop" and r.eval_count < MAX_TOKENS
    validate(schema, r.response)
