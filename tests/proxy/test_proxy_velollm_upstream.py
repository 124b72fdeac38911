"""Another VeloLLM as the upstream (kind auto): its /api/version says it is one, so OpenAI requests pass through
unconverted. Taken for an Ollama, they were converted to /api/chat and lost what Ollama has not: `n: 2` was a
400, tool_choice was dropped."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from proxy_servers import ThreadServer, velollm_server

from velollm.proxy.upstream import Upstream, UpstreamConfig

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.fixture
def velollm_upstream() -> Iterator[ThreadServer]:
    server = velollm_server()
    yield server
    server.stop()


def test_openai_requests_pass_through_to_a_velollm_upstream(velollm_upstream, start_proxy):
    proxy = start_proxy(velollm_upstream.url)
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="x", max_retries=0, timeout=30)
    messages = [{"role": "user", "content": "hi"}]
    answer = client.chat.completions.create(model="demo", messages=messages, n=2, max_tokens=4, seed=1)
    assert [c.index for c in answer.choices] == [0, 1]
    chunks = list(client.chat.completions.create(model="demo", messages=messages, n=2, max_tokens=4, stream=True))
    assert {c.choices[0].index for c in chunks if c.choices} == {0, 1}
    # tool_choice reaches the VeloLLM behind, which checks it (a name not in tools is its 400, about tool_choice)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="demo", messages=messages, tools=TOOLS,
                                       tool_choice={"type": "function", "function": {"name": "nope"}})
    assert err.value.body["param"] == "tool_choice" and "not in tools" in err.value.body["message"]


def test_responses_through_a_velollm_upstream_are_kept_here(velollm_upstream, start_proxy):
    """The create runs on the upstream's chat route and is stored in the proxy, so that retrieve, input_items,
    previous_response_id and delete find it there (the upstream's own Responses API kept it out of reach)."""
    proxy = start_proxy(velollm_upstream.url)
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="x", max_retries=0, timeout=30)
    first = client.responses.create(model="demo", input="hi", max_output_tokens=4)
    events = list(client.responses.create(model="demo", input="again", previous_response_id=first.id,
                                          max_output_tokens=4, stream=True))
    second = events[-1].response
    assert events[-1].type == "response.incomplete" and second.previous_response_id == first.id  # max_output_tokens
    assert client.responses.retrieve(first.id).output_text == first.output_text
    items = client.responses.input_items.list(second.id, order="asc").data
    assert [i.role for i in items if i.type == "message"] == ["user", "assistant", "user"]
    client.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)
    upstream = openai.OpenAI(base_url=f"{velollm_upstream.url}/v1", api_key="x", max_retries=0, timeout=30)
    with pytest.raises(openai.NotFoundError):  # the upstream answered a chat: it holds no response
        upstream.responses.retrieve(first.id)


def test_a_whole_answer_over_a_mib_becomes_the_response(start_proxy):
    """A whole chat answer over the proxy's check size (1 MiB: here 2,000 tokens with 20 top logprobs each) comes
    relayed as it arrives; the Responses create read it as a held body, a 500 (no `.body`)."""
    from tests.api.stub_engine import StubEngine
    from velollm.proxy.forward import VALIDATED_BYTES

    upstream = velollm_server(StubEngine(max_model_len=4096, token_delay_s=0))
    try:
        client = openai.OpenAI(base_url=f"{start_proxy(upstream.url).url}/v1", api_key="x", max_retries=0, timeout=60)
        kw = {"model": "demo", "max_output_tokens": 2000, "top_logprobs": 20,
              "include": ["message.output_text.logprobs"]}
        answer = client.responses.create(input="hi", **kw)
        logprobs = answer.output[0].content[0].logprobs
        assert len(answer.output_text) == len(logprobs) == 2000 and len(logprobs[0].top_logprobs) == 20
        assert len(answer.model_dump_json()) > VALIDATED_BYTES
        assert client.responses.retrieve(answer.id).output_text == answer.output_text
    finally:
        upstream.stop()


async def test_the_kind_probe_finds_a_velollm(velollm_upstream):
    upstream = Upstream(UpstreamConfig(url=velollm_upstream.url))
    try:
        assert not upstream.speaks_both
        assert await upstream.kind() == "ollama" and upstream.speaks_both
    finally:
        await upstream.aclose()
    configured = Upstream(UpstreamConfig(url=velollm_upstream.url, kind="ollama"))  # taken as said: converted
    try:
        assert await configured.kind() == "ollama" and not configured.speaks_both
    finally:
        await configured.aclose()
