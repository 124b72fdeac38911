"""Prompt logprobs asked of an upstream model go up as sent: the upstream decides (a native model scores them, or
refuses what it cannot: tests/api/test_prompt_logprobs_live.py)."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from proxy_servers import ThreadServer, fake_openai_app


@pytest.fixture
def upstream():
    received: list[tuple[str, dict[str, Any]]] = []
    server = ThreadServer(fake_openai_app(["m"], received)).start()
    yield server, received
    server.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_logprobs_reach_the_upstream_unchanged(upstream, start_proxy, stream):
    """Even what a native model refuses (prompt_logprobs with stream, echo with max_tokens 0 on chat)."""
    server, received = upstream
    client = openai.OpenAI(base_url=f"{start_proxy(server.url).url}/v1", api_key="x", max_retries=0, timeout=30)
    extra = {"prompt_logprobs": 25, "echo": True}
    answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=stream,
                                            max_tokens=0, extra_body=extra)
    text = ("".join(c.choices[0].delta.content or "" for c in answer if c.choices) if stream
            else answer.choices[0].message.content)
    assert text == "echo: hi"
    assert {key: received[-1][1].get(key) for key in (*extra, "max_tokens")} == {**extra, "max_tokens": 0}
