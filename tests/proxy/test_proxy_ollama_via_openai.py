"""What the ollama client gets from an OpenAI-compatible upstream where Ollama's own answer differs from a plain
conversion of the upstream's: embeddings, load / unload requests."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import ollama
import pytest
from proxy_servers import ThreadServer, fake_openai_app


@pytest.fixture
def openai_upstream() -> Iterator[tuple[ThreadServer, list[tuple[str, dict[str, Any]]]]]:
    received: list[tuple[str, dict[str, Any]]] = []
    server = ThreadServer(fake_openai_app(["m"], received)).start()
    yield server, received
    server.stop()


def test_api_embed_is_normalised_and_the_legacy_route_is_not(openai_upstream, start_proxy):
    """Ollama's /api/embed returns L2-normalised vectors (cut to `dimensions`, then normalised again); the
    upstream's ([3, 4, 0]) went out raw. The legacy /api/embeddings is the raw vector, as on Ollama."""
    upstream, received = openai_upstream
    client = ollama.Client(host=start_proxy(upstream.url).url, timeout=30)
    answer = client.embed(model="m", input=["a", "b"])
    assert [[round(x, 6) for x in v] for v in answer.embeddings] == [[0.6, 0.8, 0.0]] * 2
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0) for v in answer.embeddings)
    assert list(client.embed(model="m", input="a", dimensions=1).embeddings[0]) == [1.0]
    assert received[-1] == ("/v1/embeddings", {"model": "m", "input": "a", "dimensions": 1})
    assert list(client.embeddings(model="m", prompt="a").embedding) == [3.0, 4.0, 0.0]
