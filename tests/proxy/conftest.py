from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from proxy_servers import FakeOllamaState, ThreadServer, fake_ollama_app, fake_openai_app, velollm_app

from velollm.proxy.upstream import UpstreamConfig

FAKE_MODELS = ["llama3.2:latest", "gated:latest", "broken:latest", "slow:latest"]


@pytest.fixture
def ollama_state() -> FakeOllamaState:
    return FakeOllamaState(list(FAKE_MODELS))


@pytest.fixture
def fake_ollama(ollama_state: FakeOllamaState) -> Iterator[ThreadServer]:
    server = ThreadServer(fake_ollama_app(ollama_state)).start()
    yield server
    ollama_state.gate.set()
    server.stop()


@pytest.fixture
def start_proxy() -> Iterator[Callable[..., ThreadServer]]:
    """Start the real API app (no native model) in front of an upstream URL; stopped at teardown."""
    servers: list[ThreadServer] = []

    def start(url: str, proxy_only: bool = False, **config: Any) -> ThreadServer:
        server = ThreadServer(velollm_app(UpstreamConfig(url=url, **config), proxy_only=proxy_only)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def openai_models() -> list[str]:
    """The models `openai_upstream` lists (a test module overrides this fixture to list others)."""
    return ["m"]


@pytest.fixture
def openai_upstream(openai_models: list[str]) -> Iterator[tuple[ThreadServer, list[tuple[str, dict[str, Any]]]]]:
    """A fake OpenAI-compatible upstream serving `openai_models`, and the (path, body) requests it received."""
    received: list[tuple[str, dict[str, Any]]] = []
    server = ThreadServer(fake_openai_app(openai_models, received)).start()
    yield server, received
    server.stop()
