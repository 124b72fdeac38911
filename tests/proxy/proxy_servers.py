"""Servers for the proxy tests: a fake Ollama (wire format per shared/reference/ollama_api.md), a
minimal forwarding app (what the API app does for upstream models), and a uvicorn-in-a-thread runner."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from velollm.proxy.forward import error_response
from velollm.proxy.gateway import UpstreamGateway
from velollm.proxy.upstream import UpstreamConfig


class ThreadServer:
    """uvicorn on 127.0.0.1 in a daemon thread; restartable on the same port."""

    def __init__(self, app: Any, port: int = 0) -> None:
        self.app = app
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="critical", lifespan="auto", loop="asyncio", http="h11",
                                timeout_graceful_shutdown=0)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
            self._thread.join(timeout=10)
            self._server = None


# --- fake Ollama ------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class FakeOllamaState:
    def __init__(self, models: list[str]) -> None:
        self.models = models
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.gate = threading.Event()
        self.cancelled = threading.Event()


def _answer_words(path: str, body: dict[str, Any]) -> list[str]:
    if path == "/api/chat":
        text = next((m.get("content") or "" for m in reversed(body.get("messages") or []) if m.get("role") == "user"), "")
    else:
        text = body.get("prompt") or ""
    return [w + " " for w in f"echo: {text}".split()]


def fake_ollama_app(state: FakeOllamaState) -> Starlette:
    """The Ollama wire format: NDJSON streams, `{"error"}` bodies, ns durations, arguments as objects.

    Special model names: `gated` waits for state.gate after its first chunk, `broken` dies after two
    chunks, `slow` streams for 10 s and sets state.cancelled when the client goes away.
    """

    async def version(request: Request) -> Response:
        return JSONResponse({"version": "0.12.0"})

    async def tags(request: Request) -> Response:
        return JSONResponse({"models": [
            {"name": m, "model": m, "modified_at": "2025-05-10T08:06:48.639712648-07:00", "size": 1234,
             "digest": "ab" * 32, "details": {"parent_model": "", "format": "gguf", "family": "llama",
                                              "families": ["llama"], "parameter_size": "1M",
                                              "quantization_level": "F32"}} for m in state.models]})

    async def generate(request: Request) -> Response:
        body = await request.json()
        path = request.url.path
        state.requests.append((path, body))
        model = body.get("model")
        if model not in state.models and f"{model}:latest" not in state.models:
            return JSONResponse({"error": f"model '{model}' not found"}, status_code=404)
        words = _answer_words(path, body)
        limit = (body.get("options") or {}).get("num_predict")
        done_reason = "stop"
        if isinstance(limit, int) and 0 <= limit < len(words):
            words, done_reason = words[:limit], "length"
        calls = None
        if body.get("tools") and "weather" in "".join(words):
            calls = [{"id": "call_ab12cd34", "function": {"index": 0, "name": "get_weather",
                                                          "arguments": {"city": "Tokyo"}}}]
        chat = path == "/api/chat"

        def line(text: str, done: bool, tool_calls: Any = None) -> dict[str, Any]:
            obj: dict[str, Any] = {"model": model, "created_at": _now()}
            if chat:
                obj["message"] = {"role": "assistant", "content": text}
                if tool_calls:
                    obj["message"]["tool_calls"] = tool_calls
            else:
                obj["response"] = text
            obj["done"] = done
            if done:
                obj.update(done_reason=done_reason, total_duration=1_000_000, load_duration=1000,
                           prompt_eval_count=len(_answer_words(path, body)) - 1, prompt_eval_duration=2000,
                           eval_count=len(words), eval_duration=3000)
                if not chat:
                    obj["context"] = [1, 2, 3]
            return obj

        if body.get("stream") is False:
            if model == "slow":
                # Like Ollama's request context: notice the client leaving while generating.
                for _ in range(200):
                    if await request.is_disconnected():
                        state.cancelled.set()
                        break
                    await asyncio.sleep(0.05)
            final = line("".join(words), True, calls)
            return JSONResponse(final)

        async def stream() -> Any:
            finished = False
            try:
                for i, word in enumerate(words):
                    yield json.dumps(line(word, False)) + "\n"
                    if model == "gated" and i == 0:
                        await asyncio.to_thread(state.gate.wait, 10)
                    if model == "broken" and i == 1:
                        raise RuntimeError("upstream crashed")
                if model == "slow":
                    for _ in range(200):
                        await asyncio.sleep(0.05)
                        yield json.dumps(line("x ", False)) + "\n"
                if calls:
                    yield json.dumps(line("", False, calls)) + "\n"
                yield json.dumps(line("", True)) + "\n"
                finished = True
            finally:
                if not finished:
                    state.cancelled.set()

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    async def embed(request: Request) -> Response:
        body = await request.json()
        state.requests.append((request.url.path, body))
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else inputs
        return JSONResponse({"model": body.get("model"), "embeddings": [[0.6, 0.8] for _ in inputs],
                             "prompt_eval_count": len(inputs)})

    return Starlette(routes=[
        Route("/api/version", version, methods=["GET"]),
        Route("/api/tags", tags, methods=["GET"]),
        Route("/api/chat", generate, methods=["POST"]),
        Route("/api/generate", generate, methods=["POST"]),
        Route("/api/embed", embed, methods=["POST"]),
    ])


# --- the forwarding app (what velollm/api does for upstream models) ---------------------------


def forwarding_app(config: UpstreamConfig, proxy_only: bool = False) -> Starlette:
    """A minimal API app around UpstreamGateway, the object velollm/api calls for upstream models."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        app.state.gateway = UpstreamGateway(config, proxy_only=proxy_only)
        yield
        await app.state.gateway.aclose()

    async def handle(request: Request) -> Response:
        api = "openai" if request.url.path.startswith("/v1/") else "ollama"
        body = await request.json()
        name = str(body.get("model") or "")
        if not await request.app.state.gateway.has_model(name):
            return error_response(api, 404, f"model '{name}' not found")
        return await request.app.state.gateway.forward(request, body)

    async def tags(request: Request) -> Response:
        return JSONResponse({"models": await request.app.state.gateway.ollama_tags()})

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": await request.app.state.gateway.openai_models()})

    paths = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/api/chat", "/api/generate",
             "/api/embed", "/api/embeddings"]
    return Starlette(routes=[Route(p, handle, methods=["POST"]) for p in paths]
                     + [Route("/api/tags", tags, methods=["GET"]), Route("/v1/models", models, methods=["GET"])],
                     lifespan=lifespan)


def velollm_app(config: UpstreamConfig, proxy_only: bool = False) -> Any:
    """The real API app (velollm/api) with no native model and the gateway as its upstream."""
    from velollm.api.app import create_app
    from velollm.api.server_config import ServerConfig

    return create_app(ServerConfig(stats_interval_s=0), engines={},
                      upstream=UpstreamGateway(config, proxy_only=proxy_only))
