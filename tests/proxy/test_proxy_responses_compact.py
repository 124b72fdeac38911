"""POST /v1/responses/compact for a model served through an upstream (openai SDK): an upstream with its own
Responses API compacts (its answer relayed, a continuation asked of the upstream holding the chain); one with a
chat route only cannot, and says so with a 501 rather than a summary made by another model."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from proxy_servers import ThreadServer, velollm_server


@pytest.fixture
def upstream() -> Iterator[ThreadServer]:
    server = velollm_server()
    yield server
    server.stop()


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=30)


TURNS = [{"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": "Hello Ada."},
         {"role": "user", "content": "I like chess."}]


@pytest.mark.parametrize("kind", ["openai", None])
def test_a_velollm_upstream_compacts(upstream, start_proxy, kind):
    """Declared an OpenAI upstream, or found by the kind probe (its creates stored by the proxy, the chain sent as
    its items): either way the upstream's model summarises, and the proxy's create reads the item back."""
    front = _client(start_proxy(upstream.url, **({"kind": kind} if kind else {})).url)
    compacted = front.responses.compact(model="demo", input=TURNS)
    assert compacted.object == "response.compaction" and compacted.output[-1].type == "compaction"
    assert [m.content[0].text for m in compacted.output[:-1]] == ["My name is Ada.", "I like chess."]
    window = [item.model_dump(exclude_none=True, warnings=False) for item in compacted.output]
    made = front.responses.create(model="demo", input=[*window, {"role": "user", "content": "and?"}],
                                  max_output_tokens=2)
    assert made.usage.input_tokens > 0
    first = front.responses.create(model="demo", input="hello there", max_output_tokens=3)
    chained = front.responses.compact(model="demo", input="and?", previous_response_id=first.id)
    assert [m.content[0].text for m in chained.output[:-1]] == ["hello there", "and?"]
    with pytest.raises(openai.NotFoundError):
        front.responses.compact(model="nope", input="hi")


def test_an_upstream_with_a_chat_route_only_cannot_compact(openai_upstream, start_proxy):
    server, _ = openai_upstream
    front = _client(start_proxy(server.url, kind="openai").url)
    with pytest.raises(openai.APIStatusError) as refused:
        front.responses.compact(model="m", input="hi")
    assert refused.value.status_code == 501
    assert refused.value.body["code"] == "compaction_unavailable" and "'m'" in refused.value.body["message"]
    with pytest.raises(openai.BadRequestError):  # bad input is still a 400
        front.responses.compact(model="m", input=5)


def test_an_ollama_upstream_cannot_compact(fake_ollama, start_proxy):
    front = _client(start_proxy(fake_ollama.url).url)
    with pytest.raises(openai.APIStatusError) as refused:
        front.responses.compact(model="llama3.2", input="hi")
    assert refused.value.status_code == 501 and refused.value.body["code"] == "compaction_unavailable"
