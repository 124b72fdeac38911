"""A /v1/responses create for a model whose replicas have no Responses API of their own (Ollamas; VeloLLMs found by
the kind probe, whose Responses API would keep the response out of the router's reach) runs on one replica's chat
route, picked once. It was first tried on /v1/responses of the replica the policy chose (an Ollama's conversion
answers 404, a probed VeloLLM's gateway 501), then picked again for the chat: under round-robin over two replicas
every chat went to the same one, and each create counted twice in the policy and the backends' request counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.proxy.proxy_servers import FakeOllamaState, ThreadServer, fake_ollama_app, velollm_server
from tests.router.replicas import config_toml, metric, router_app

N = 6  # creates, half of them streamed
ROUND_ROBIN = {"policy": "round-robin", "health_interval_s": 0}


def _creates(url: str, model: str) -> list[str]:
    """N creates through the openai SDK; each answer's text."""
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
    texts = []
    for i in range(N):
        if i % 2:
            events = list(sdk.responses.create(model=model, input=f"turn {i}", stream=True,
                                                max_output_tokens=8))
            assert events[-1].type in ("response.completed", "response.incomplete"), events[-1]
            answer = events[-1].response
        else:
            answer = sdk.responses.create(model=model, input=f"turn {i}", max_output_tokens=8)
        assert sdk.responses.retrieve(answer.id).output_text == answer.output_text  # stored in the router
        texts.append(answer.output_text)
    return texts


def _requests_per_backend(url: str, names: tuple[str, ...]) -> dict[str, float | None]:
    page = httpx.get(url + "/metrics").text
    return {name: metric(page, "velollm_backend_requests_total", backend=name) for name in names}


@pytest.fixture
def ollamas() -> Iterator[list[tuple[ThreadServer, FakeOllamaState]]]:
    states = [FakeOllamaState(["llama3.2:latest"]) for _ in range(2)]
    servers = [ThreadServer(fake_ollama_app(s)).start() for s in states]
    yield list(zip(servers, states))
    for server in servers:
        server.stop()


@pytest.mark.parametrize("kind", ["ollama", "auto"])
def test_each_create_runs_on_one_ollama_replica(tmp_path, ollamas, kind):
    backends = [{"name": name, "url": server.url, "kind": kind, "models": ["llama3.2"]}
                for name, (server, _) in zip("ab", ollamas)]
    router = ThreadServer(router_app(config_toml(backends, **ROUND_ROBIN), tmp_path)).start()
    try:
        texts = _creates(router.url, "llama3.2")
        assert [t.strip() for t in texts] == [f"echo: turn {i}" for i in range(N)]
        for _, state in ollamas:  # each replica: half the chats, and nothing else for a create
            paths = Counter(path for path, _ in state.requests)
            assert paths == {"/api/chat": N // 2}, paths
        assert _requests_per_backend(router.url, ("a", "b")) == {"a": N // 2, "b": N // 2}
    finally:
        router.stop()


def test_each_create_runs_on_one_probed_velollm_replica(tmp_path):
    """VeloLLMs behind kind auto: the probe finds them, and their Responses API is not used (the router stores the
    response), so the chat route, one replica per create."""
    servers = [velollm_server() for _ in range(2)]
    backends = [{"name": name, "url": server.url, "kind": "auto", "models": ["demo"]}
                for name, server in zip("ab", servers)]
    router = ThreadServer(router_app(config_toml(backends, **ROUND_ROBIN), tmp_path)).start()
    try:
        _creates(router.url, "demo")
        assert _requests_per_backend(router.url, ("a", "b")) == {"a": N // 2, "b": N // 2}
        for server in servers:  # the replicas answered chats only: none holds a response
            page = httpx.get(server.url + "/metrics").text
            assert 'endpoint="/v1/responses"' not in page, [line for line in page.splitlines() if "responses" in line]
    finally:
        router.stop()
        for server in servers:
            server.stop()


def _recording(app: Any, paths: list[str]) -> Any:
    """`app`, with the path of every request it receives appended to `paths` (those it has no route for too)."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            paths.append(scope["path"])
        await app(scope, receive, send)

    return asgi


def _llama_cpp_likes(tmp_path: Any, paths: list[list[str]]) -> tuple[ThreadServer, list[ThreadServer]]:
    """A round-robin router over two small OpenAI-compatible servers without /v1/responses (llama.cpp's server:
    404), each recording the paths it is asked into `paths`."""
    from tests.proxy.proxy_servers import fake_openai_app

    servers = [ThreadServer(_recording(fake_openai_app(["m"], []), p)).start() for p in paths]
    backends = [{"name": name, "url": server.url, "kind": "openai", "models": ["m"]}
                for name, server in zip("ab", servers)]
    return ThreadServer(router_app(config_toml(backends, **ROUND_ROBIN), tmp_path)).start(), servers


def _asked(paths: list[str]) -> Counter[str]:
    return Counter(p for p in paths if p.startswith("/v1/") and p != "/v1/models")


@pytest.mark.parametrize("stream", [False, True])
def test_the_first_create_runs_on_the_replica_that_said_it_has_no_responses_api(tmp_path, stream):
    """The first create on a replica without /v1/responses: its 404 (for a model it lists) and then its chat, one
    replica for the create; the chat was picked again, and ran on the other replica."""
    paths: list[list[str]] = [[], []]
    router, servers = _llama_cpp_likes(tmp_path, paths)
    try:
        sdk = openai.OpenAI(base_url=f"{router.url}/v1", api_key="x", max_retries=0, timeout=60)
        if stream:
            events = list(sdk.responses.create(model="m", input="hi", stream=True, max_output_tokens=8))
            assert events[-1].type in ("response.completed", "response.incomplete"), events[-1]
        else:
            assert sdk.responses.create(model="m", input="hi", max_output_tokens=8).output_text
        asked = sorted((_asked(p) for p in paths), key=len, reverse=True)
        assert asked == [{"/v1/responses": 1, "/v1/chat/completions": 1}, {}]
        assert _requests_per_backend(router.url, ("a", "b")) in ({"a": 2, "b": 0}, {"a": 0, "b": 2})
    finally:
        router.stop()
        for server in servers:
            server.stop()


def test_a_replica_that_said_it_has_no_responses_api_gets_chats_only(tmp_path):
    """OpenAI-compatible replicas without /v1/responses (llama.cpp's server: 404): the first create tries the
    replica it picked, which answers 404 for a model it lists; that replica is then known to have none, and the
    creates after it run on the chat route, one replica each."""
    paths: list[list[str]] = [[], []]
    router, servers = _llama_cpp_likes(tmp_path, paths)
    try:
        _creates(router.url, "m")
        asked = [_asked(got) for got in paths]
        asked.sort(key=len, reverse=True)  # the one tried first, whichever round-robin starts with
        assert asked == [{"/v1/responses": 1, "/v1/chat/completions": N // 2}, {"/v1/chat/completions": N // 2}]
    finally:
        router.stop()
        for server in servers:
            server.stop()


def _balanced_app(toml: str, tmp_path: Any, engine: Any) -> Any:
    """The real API app running `engine` as `demo` itself, one replica (the config's native backend) beside the
    remote ones of `toml`, as `velollm serve --config` with a native backend."""
    from velollm.api.app import create_app
    from velollm.api.server_config import ServerConfig
    from velollm.router.config import load_config
    from velollm.router.router import Router

    path = tmp_path / "velollm.toml"
    path.write_text(toml)
    routing = load_config(path)
    return create_app(ServerConfig(models=("demo",), stats_interval_s=0, config_file=routing), engines={"demo": engine},
                      upstream=Router(routing))


def test_each_create_of_a_balanced_model_runs_on_one_replica(tmp_path, ollamas):
    """`demo` run by this process and by an Ollama, round-robin: each create runs on one of them, the Ollama's on its
    chat route. It was tried on /v1/responses first: the replica picked for it (an Ollama: its 404) was followed
    by a second pick for the chat, so a create reached two backends, and every chat went to the same one."""
    from tests.api.stub_engine import StubEngine

    (server, state), _ = ollamas
    state.models = ["demo:latest"]
    backends = [{"name": "local", "kind": "native", "models": ["demo"]},
                {"name": "r", "url": server.url, "kind": "ollama", "models": ["demo"]}]
    engine = StubEngine()
    router = ThreadServer(_balanced_app(config_toml(backends, **ROUND_ROBIN), tmp_path, engine)).start()
    try:
        texts = _creates(router.url, "demo")
        paths = Counter(path for path, _ in state.requests)
        assert paths == {"/api/chat": N // 2}, paths
        assert len(engine.seen_prompts) == N // 2
        assert sum(t.strip().startswith("echo:") for t in texts) == N // 2
        assert _requests_per_backend(router.url, ("local", "r")) == {"local": N // 2, "r": N // 2}
    finally:
        router.stop()


def test_a_create_the_local_engine_refuses_runs_on_the_remote_chat(tmp_path, ollamas):
    """The local engine chosen but refusing before the first byte (its queue full): the create runs on the other
    replica's chat route and is the Response, stored here; it was the Ollama's 404 for /v1/responses."""
    from tests.api.stub_engine import StubEngine
    from velollm.errors import Overloaded

    (server, state), _ = ollamas
    state.models = ["demo:latest"]
    backends = [{"name": "local", "kind": "native", "models": ["demo"]},
                {"name": "a", "url": server.url, "kind": "ollama", "models": ["demo"]}]  # "local" picked first

    class Refusing(StubEngine):
        async def generate(self, prompt_token_ids: Any, params: Any, request_id: Any = None) -> Any:
            raise Overloaded("the queue is full")  # where the router's check (an empty queue) let it through
            yield

    engine = Refusing()
    router = ThreadServer(_balanced_app(config_toml(backends, **ROUND_ROBIN), tmp_path, engine)).start()
    try:
        texts = _creates(router.url, "demo")
        assert [t.strip() for t in texts] == [f"echo: turn {i}" for i in range(N)]
        assert Counter(path for path, _ in state.requests) == {"/api/chat": N}
        assert engine.seen_prompts == []
    finally:
        router.stop()
