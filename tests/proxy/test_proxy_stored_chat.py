"""Stored chat completions (`store: true`) of answers relayed from an OpenAI-compatible upstream whose ids
repeat (the fake upstream answers every request as `chatcmpl-1`, as weak as real Ollama's /v1 ids: `chatcmpl-`
and a number below 1000). Each stored completion gets an id of VeloLLM's own, the one its client receives
(in the whole body, or in every chunk of a stream), so none replaces another. Through the openai SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from proxy_servers import ThreadServer, fake_openai_app

from velollm.proxy.gateway import UpstreamGateway
from velollm.proxy.upstream import UpstreamConfig

UPSTREAM_ID = "chatcmpl-1"  # what fake_openai_app answers every time


@pytest.fixture
def front(tmp_path: Path) -> Iterator[tuple[openai.OpenAI, list[tuple[str, dict[str, Any]]]]]:
    """A proxy-only VeloLLM (its store in tmp_path) in front of the fake OpenAI upstream."""
    from velollm.api.app import create_app
    from velollm.api.server_config import ServerConfig

    received: list[tuple[str, dict[str, Any]]] = []
    upstream = ThreadServer(fake_openai_app(["up-model"], received)).start()
    gateway = UpstreamGateway(UpstreamConfig(url=upstream.url, kind="openai"), proxy_only=True)
    app = create_app(ServerConfig(models=(), proxy_only=True, stats_interval_s=0,
                                  responses_db=str(tmp_path / "responses.sqlite")), engines={}, upstream=gateway)
    server = ThreadServer(app).start()
    try:
        yield openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=30), received
    finally:
        server.stop()
        upstream.stop()


def _ask(client: openai.OpenAI, text: str, stream: bool, **kw: Any) -> tuple[str, str]:
    """(the id the client got, the answer's text), every chunk of a stream carrying that one id."""
    messages = [{"role": "user", "content": text}]
    if not stream:
        r = client.chat.completions.create(model="up-model", messages=messages, store=True, **kw)
        return r.id, r.choices[0].message.content
    chunks = list(client.chat.completions.create(model="up-model", messages=messages, store=True, stream=True, **kw))
    assert chunks and len({c.id for c in chunks}) == 1
    return chunks[0].id, "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_upstream_ids_that_repeat_do_not_replace_stored_completions(front, stream):
    client, received = front
    first_id, first = _ask(client, "first question", stream, metadata={"n": "1"})
    second_id, second = _ask(client, "second question", stream, metadata={"n": "2"})
    assert len(received) == 2 and all(body.get("store") for _, body in received)  # the upstream got both
    assert first == "echo: first question" and second == "echo: second question"
    assert first_id != second_id and UPSTREAM_ID not in (first_id, second_id)
    assert first_id.startswith("chatcmpl-") and second_id.startswith("chatcmpl-")
    for completion_id, text, n in ((first_id, first, "1"), (second_id, second, "2")):
        stored = client.chat.completions.retrieve(completion_id)
        assert stored.id == completion_id and stored.choices[0].message.content == text
        assert stored.metadata == {"n": n}
        assert [m.content for m in client.chat.completions.messages.list(completion_id)] == [
            f"{'first' if n == '1' else 'second'} question"]
    assert [c.id for c in client.chat.completions.list()] == [first_id, second_id]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(UPSTREAM_ID)


def test_answers_not_stored_keep_the_upstream_id(front):
    client, _ = front
    r = client.chat.completions.create(model="up-model", messages=[{"role": "user", "content": "hi"}])
    assert r.id == UPSTREAM_ID  # relayed as it is: nothing is stored under it
    chunks = list(client.chat.completions.create(model="up-model", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True))
    assert {c.id for c in chunks} == {UPSTREAM_ID}
