"""Drain / DrainMiddleware in-process: what a cut response ends with, per wire format, and admission."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from velollm.api.drain import Drain, DrainMiddleware


def _streaming_app(content_type: str, chunks: list[bytes]) -> Any:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        headers = [(b"content-type", content_type.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await asyncio.sleep(3600)  # a stream that outlives the shutdown timeout

    return app


async def _cut(app: Any, path: str, timeout_s: float = 0.05) -> tuple[list[dict], Drain]:
    drain = Drain()
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    request = asyncio.ensure_future(DrainMiddleware(app, drain=drain)({"type": "http", "path": path, "headers": []},
                                                                      receive, send))
    await asyncio.sleep(0.01)
    assert drain.num_running == 1
    await drain.run(timeout_s)
    await asyncio.wait_for(request, 10)  # ends at the cut; a loaded box may run it late
    assert drain.num_running == 0
    return sent, drain


def _body(sent: list[dict]) -> bytes:
    assert sent[-1]["type"] == "http.response.body" and not sent[-1].get("more_body")
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_cut_openai_stream_ends_with_error_event_and_done():
    sent, _ = asyncio.run(_cut(_streaming_app("text/event-stream", [b'data: {"choices": []}\n\n']),
                               "/v1/chat/completions"))
    events = _body(sent).decode().split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert json.loads(events[-3][6:])["error"]["code"] == "shutting_down"


def test_cut_ollama_stream_ends_with_an_error_line_even_mid_line():
    sent, _ = asyncio.run(_cut(_streaming_app("application/x-ndjson", [b'{"response": "a"}\n{"respo']),
                               "/api/generate"))
    last = _body(sent).decode().split("\n")[-2]
    assert "shutting down" in json.loads(last)["error"]


def test_cut_responses_stream_ends_with_an_error_event():
    sent, _ = asyncio.run(_cut(_streaming_app("text/event-stream", [b"event: x\ndata: {}\n\n"]), "/v1/responses"))
    assert _body(sent).decode().endswith('"param":null}\n\n') and b"event: error\ndata: " in _body(sent)


def test_cut_before_the_answer_started_is_a_503():
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await asyncio.sleep(3600)

    sent, _ = asyncio.run(_cut(app, "/v1/completions"))
    assert sent[0]["status"] == 503 and json.loads(_body(sent))["error"]["code"] == "shutting_down"


@pytest.mark.parametrize("path,admitted", [("/api/generate", False), ("/health", True), ("/metrics", True)])
def test_draining_refuses_new_requests_but_health_and_metrics(path, admitted):
    drain = Drain()
    asyncio.run(drain.run(0))
    assert drain.draining and drain.admits(path) is admitted
