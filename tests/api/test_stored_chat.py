"""Stored chat completions (`store: true`) through the official openai SDK: create (whole and streamed),
client.chat.completions.list / retrieve / update / delete and .messages.list; on the stub engine, through
a proxy-only VeloLLM in front of a second VeloLLM (the upstream's answer is stored by the front), and on a
live `velollm serve`, whose store is the Responses API's SQLite file (kept across a restart)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.api.conftest import ThreadedServer, free_port, stub_app
from tests.serve_process import start_serve, stop_serve

HI = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)


@pytest.fixture
def client() -> Iterator[openai.OpenAI]:
    port = free_port()
    with ThreadedServer(stub_app(port=port), port):
        yield _client(f"http://127.0.0.1:{port}")


def _streamed(client: openai.OpenAI, **kw) -> tuple[str, str]:
    """(id, text) of a streamed completion, read to its end as a client does."""
    chunks = list(client.chat.completions.create(model="demo", stream=True, max_tokens=4, **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return chunks[0].id, text


def test_stored_completions_retrieve_update_delete(client):
    whole = client.chat.completions.create(model="demo", messages=HI, max_tokens=4, store=True,
                                           metadata={"topic": "greeting"})
    got = client.chat.completions.retrieve(whole.id)
    assert got.id == whole.id and got.object == "chat.completion" and got.model == "demo"
    assert got.choices[0].message.content == whole.choices[0].message.content
    assert got.usage.completion_tokens == 4 and got.metadata == {"topic": "greeting"}
    # streamed: stored as assembled, and there as soon as the client has read the stream's end
    sid, text = _streamed(client, messages=HI, store=True, stream_options={"include_usage": True})
    kept = client.chat.completions.retrieve(sid)
    assert kept.choices[0].message.content == text and kept.choices[0].finish_reason == "length"
    assert kept.usage.completion_tokens == 4 and kept.metadata == {}
    # without stream_options: stored with its usage all the same, and the client gets no usage chunk
    chunks = list(client.chat.completions.create(model="demo", stream=True, max_tokens=4, messages=HI, store=True))
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    kept = client.chat.completions.retrieve(chunks[0].id)
    assert kept.usage.completion_tokens == 4 and kept.usage.prompt_tokens > 0
    assert kept.choices[0].message.content == "".join(c.choices[0].delta.content or "" for c in chunks)
    updated = client.chat.completions.update(whole.id, metadata={"topic": "hello", "n": "1"})
    assert updated.metadata == {"topic": "hello", "n": "1"}
    assert client.chat.completions.retrieve(whole.id).metadata == {"topic": "hello", "n": "1"}
    assert client.chat.completions.update(whole.id, metadata=None).metadata == {}
    deleted = client.chat.completions.delete(whole.id)
    assert deleted.deleted and deleted.id == whole.id and deleted.object == "chat.completion.deleted"
    for call in (lambda: client.chat.completions.retrieve(whole.id), lambda: client.chat.completions.delete(whole.id),
                 lambda: client.chat.completions.update(whole.id, metadata={}),
                 lambda: client.chat.completions.messages.list(whole.id)):
        with pytest.raises(openai.NotFoundError, match=whole.id):
            call()


def test_only_store_true_is_stored(client):
    plain = client.chat.completions.create(model="demo", messages=HI, max_tokens=2)
    unstored = client.chat.completions.create(model="demo", messages=HI, max_tokens=2, store=False,
                                              metadata={"k": "v"})
    sid, _ = _streamed(client, messages=HI)
    for completion_id in (plain.id, unstored.id, sid):
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.retrieve(completion_id)
    assert client.chat.completions.list().data == []


def test_list_pages_filters_and_orders(client):
    ids = []
    for i in range(5):
        r = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": f"q{i}"}],
                                           max_tokens=2, store=True, metadata={"parity": str(i % 2), "i": str(i)})
        ids.append(r.id)
    first = client.chat.completions.list(limit=2)  # oldest first, OpenAI's default order
    assert [c.id for c in first.data] == ids[:2] and first.has_more
    assert [c.id for c in client.chat.completions.list(limit=2)] == ids  # the SDK's auto-pagination (after=)
    second = client.chat.completions.list(limit=2, after=ids[1])
    assert [c.id for c in second.data] == ids[2:4] and second.has_more
    assert [c.id for c in client.chat.completions.list(order="desc").data] == ids[::-1]
    assert [c.id for c in client.chat.completions.list(order="desc", after=ids[2]).data] == ids[1::-1]
    even = client.chat.completions.list(metadata={"parity": "0"})
    assert [c.id for c in even.data] == [ids[0], ids[2], ids[4]] and not even.has_more
    assert [c.id for c in client.chat.completions.list(metadata={"parity": "1", "i": "3"})] == [ids[3]]
    assert client.chat.completions.list(model="demo").data[0].id == ids[0]
    assert client.chat.completions.list(model="other").data == []
    raw = httpx.get(f"{client.base_url}chat/completions", params={"limit": 2, "order": "desc"}).json()
    assert raw["object"] == "list" and raw["first_id"] == ids[4] and raw["last_id"] == ids[3] and raw["has_more"]
    for bad in ({"limit": 0}, {"limit": 101}, {"order": "sideways"}, {"after": "chatcmpl-nope"}):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.list(**bad)
    # limit is ASCII digits: what Python's int() also reads (`5_0` as 50, Arabic-Indic digits) is a 400
    for limit in ("5_0", " 3", "3 ", "+3", "\u0663", "\uff13", "1.0", "1e1", "9" * 5000):
        with pytest.raises(openai.BadRequestError, match="limit"):
            client.chat.completions.list(extra_query={"limit": limit})
        with pytest.raises(openai.BadRequestError, match="limit"):
            client.chat.completions.messages.list(ids[0], extra_query={"limit": limit})


def test_messages_are_the_input_messages_paginated(client):
    messages = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "one"},
                {"role": "assistant", "content": "two"},
                {"role": "user", "content": [{"type": "text", "text": "three"}, {"type": "text", "text": "!"}]}]
    r = client.chat.completions.create(model="demo", messages=messages, max_tokens=2, store=True)
    listed = client.chat.completions.messages.list(r.id)
    assert [m.role for m in listed.data] == ["developer", "user", "assistant", "user"] and not listed.has_more
    assert [m.content for m in listed.data] == ["Be brief.", "one", "two", "three!"]
    assert listed.data[0].id == f"{r.id}-0" and listed.data[0].content_parts is None
    assert [p.text for p in listed.data[3].content_parts] == ["three", "!"]
    page = client.chat.completions.messages.list(r.id, limit=2)
    assert [m.content for m in page.data] == ["Be brief.", "one"] and page.has_more
    rest = client.chat.completions.messages.list(r.id, limit=2, after=page.data[-1].id)
    assert [m.content for m in rest.data] == ["two", "three!"] and not rest.has_more
    assert [m.content for m in client.chat.completions.messages.list(r.id, limit=1)] == \
        ["Be brief.", "one", "two", "three!"]  # auto-pagination
    assert [m.content for m in client.chat.completions.messages.list(r.id, order="desc", limit=2).data] == \
        ["three!", "two"]
    with pytest.raises(openai.BadRequestError, match="after"):
        client.chat.completions.messages.list(r.id, after="msg_nope")


@pytest.mark.parametrize("field,value,param,code", [
    ("metadata", {f"k{i}": "v" for i in range(17)}, "metadata", "object_above_max_properties"),
    ("metadata", {"k" * 65: "v"}, "metadata", "invalid_metadata_key"),
    ("metadata", {"k": "v" * 513}, "metadata.k", "string_above_max_length"),
    ("metadata", {"k": 1}, "metadata.k", "invalid_type"),
    ("metadata", "k=v", "metadata", "invalid_type"),
    ("user", 42, "user", "invalid_type"),
    ("user", {"id": "u"}, "user", "invalid_type"),
    ("store", "yes", "store", "invalid_type")])
def test_metadata_user_and_store_are_checked_as_openai_checks_them(client, field, value, param, code):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="demo", messages=HI, max_tokens=2, **{field: value})
    body = caught.value.body
    assert body["param"] == param and body["code"] == code and body["type"] == "invalid_request_error", body
    assert client.chat.completions.list().data == []  # nothing ran, nothing stored


def test_metadata_at_the_limits_and_updates_are_checked(client):
    at_limits = {f"{i:0>64}": "v" * 512 for i in range(16)}
    r = client.chat.completions.create(model="demo", messages=HI, max_tokens=2, store=True, metadata=at_limits,
                                       user="user-1")
    assert client.chat.completions.retrieve(r.id).metadata == at_limits
    with pytest.raises(openai.BadRequestError, match="metadata.k"):
        client.chat.completions.update(r.id, metadata={"k": 3})
    with pytest.raises(openai.BadRequestError, match="metadata"):
        client.chat.completions.update(r.id, metadata=None, extra_body={"model": "other"})  # only metadata changes
    assert client.chat.completions.retrieve(r.id).metadata == at_limits


def _image(num_base64: int) -> list[dict]:
    url = "data:image/png;base64," + "A" * num_base64
    return [{"role": "user", "content": [{"type": "text", "text": "What is it?"},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


def test_a_completion_over_the_row_cap_is_refused_or_not_stored():
    """--responses-max-row-size: store: true with input messages already over it (a base64 image counts by its
    base64 bytes) is a 400 before generation; a row the answer takes over it is answered, not stored."""
    from tests.api.conftest import ServerHandle
    from tests.api.stub_engine import StubEngine

    port = free_port()
    with ThreadedServer(stub_app(StubEngine(max_model_len=4096), port=port, responses_max_row_bytes=4096), port):
        handle, client = ServerHandle("stub", f"http://127.0.0.1:{port}"), _client(f"http://127.0.0.1:{port}")
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="demo", messages=_image(5000), max_tokens=2, store=True)
        body = refused.value.body
        assert body["param"] == "store" and body["code"] == "stored_row_too_large"
        assert "--responses-max-row-size" in body["message"]
        # Under the cap the request goes on, and this text-only model is what refuses the image.
        with pytest.raises(openai.BadRequestError) as text_only:
            client.chat.completions.create(model="demo", messages=_image(3000), max_tokens=2, store=True)
        assert text_only.value.body["param"] != "store" and "text only" in text_only.value.body["message"]
        long = [{"role": "user", "content": "x" * 3000}]
        whole = client.chat.completions.create(model="demo", messages=long, max_tokens=1000, store=True)
        chunks = list(client.chat.completions.create(model="demo", messages=long, max_tokens=1000, store=True,
                                                     stream=True))
        assert whole.choices[0].finish_reason == "length" and chunks[-1].choices[0].finish_reason == "length"
        for completion_id in (whole.id, chunks[0].id):
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.retrieve(completion_id)
        kept = client.chat.completions.create(model="demo", messages=long, max_tokens=2, store=True)
        assert client.chat.completions.retrieve(kept.id).id == kept.id
        assert handle.metric("velollm_store_rows_skipped_total", store="chat_completions", outcome="refused") == 1
        assert handle.metric("velollm_store_rows_skipped_total", store="chat_completions", outcome="unstored") == 2


def test_an_upstream_answer_is_stored_by_the_front(tmp_path):
    """A proxy-only VeloLLM in front of a second VeloLLM (the Ollama upstream): the front stores what its
    client got, whole or streamed, and answers the stored-completion routes itself."""
    from velollm.api.app import create_app
    from velollm.api.server_config import ServerConfig
    from velollm.proxy.gateway import UpstreamGateway
    from velollm.proxy.upstream import UpstreamConfig

    up_port, front_port = free_port(), free_port()
    with ThreadedServer(stub_app(port=up_port), up_port):
        gateway = UpstreamGateway(UpstreamConfig(url=f"http://127.0.0.1:{up_port}"), proxy_only=True)
        front = create_app(ServerConfig(models=(), proxy_only=True, stats_interval_s=0,
                                        responses_db=str(tmp_path / "responses.sqlite")),
                           engines={}, upstream=gateway)
        with ThreadedServer(front, front_port):
            client = _client(f"http://127.0.0.1:{front_port}")
            whole = client.chat.completions.create(model="demo", messages=HI, max_tokens=3, store=True,
                                                   metadata={"via": "upstream"})
            chunks = list(client.chat.completions.create(model="demo", stream=True, max_tokens=4, messages=HI,
                                                         store=True))
            sid, text = chunks[0].id, "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert all(c.choices for c in chunks)  # the usage chunk asked for the store is not the client's
            assert client.chat.completions.retrieve(whole.id).choices[0].message.content == \
                whole.choices[0].message.content
            stored = client.chat.completions.retrieve(sid)
            assert stored.choices[0].message.content == text and stored.usage.completion_tokens > 0
            assert [c.id for c in client.chat.completions.list(metadata={"via": "upstream"})] == [whole.id]
            assert [m.content for m in client.chat.completions.messages.list(sid)] == ["Be brief.", "hi"]
            with pytest.raises(openai.BadRequestError, match="metadata"):
                client.chat.completions.create(model="demo", messages=HI, max_tokens=3, metadata={"k": 1})


def test_live_server_keeps_them_in_the_responses_file_across_a_restart(tmp_path):
    proc, url, _log, _ = start_serve(tmp_path, "--max-model-len", "256")
    try:
        client = _client(url)
        whole = client.chat.completions.create(model="demo", messages=HI, max_tokens=3, store=True,
                                               metadata={"run": "live"})
        sid, text = _streamed(client, messages=HI, store=True)
        assert client.chat.completions.retrieve(sid).choices[0].message.content == text
    finally:
        stop_serve(proc)
    assert (tmp_path / "cache" / "responses.sqlite").exists()  # the Responses API's file ($VELOLLM_CACHE)
    proc, url, _log, _ = start_serve(tmp_path, "--max-model-len", "256")
    try:
        client = _client(url)
        assert [c.id for c in client.chat.completions.list()] == [whole.id, sid]
        assert client.chat.completions.retrieve(whole.id).metadata == {"run": "live"}
        assert client.chat.completions.retrieve(sid).choices[0].message.content == text
    finally:
        stop_serve(proc)


def test_the_row_cap_flag_reaches_the_server_config():
    from velollm.cli import build_parser
    from velollm.commands import serve

    def config(*flags: str):
        return serve.build_config(build_parser().parse_args(["serve", *flags]), {})

    assert config().responses_max_row_bytes == 16 << 20
    assert config("--responses-max-row-size", "2MiB").responses_max_row_bytes == 2 << 20
    with pytest.raises(ValueError, match="responses_max_row_bytes"):
        config("--responses-max-row-size", "0")
