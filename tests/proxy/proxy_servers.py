"""Servers for the proxy tests: a fake Ollama (wire format per shared/reference/ollama_api.md) and a
fake OpenAI-compatible server, both recording what they received; the real API app in front of them;
a uvicorn-in-a-thread runner."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from velollm.proxy.gateway import UpstreamGateway
from velollm.proxy.upstream import UpstreamConfig
from velollm.wire.timestamps import now_rfc3339


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
        deadline = time.monotonic() + 60  # the app's lifespan runs first (a router's, a store's): seconds when loaded
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


def velollm_server(engine: Any = None) -> ThreadServer:
    """A real VeloLLM app serving `engine` (a StubEngine by default) as `demo`, started: an upstream of a proxy
    or a router's replica."""
    from tests.api.stub_engine import StubEngine
    from velollm.api.app import create_app
    from velollm.api.server_config import ServerConfig

    engines = {"demo": engine if engine is not None else StubEngine()}
    return ThreadServer(create_app(ServerConfig(stats_interval_s=0), engines)).start()


# --- fake Ollama ------------------------------------------------------------------------------


def listing_routes(kind: str, models: list[str]) -> list[Route]:
    """/api/version, /api/tags and /v1/models of a fake upstream listing `models`: "ollama" answers as Ollama
    does; any other kind as an OpenAI-compatible server, which has no /api/version (a 404)."""

    async def version(request: Request) -> Response:
        if kind == "ollama":
            return JSONResponse({"version": "0.12.0"})
        return JSONResponse({"detail": "Not Found"}, status_code=404)

    async def listing(request: Request) -> Response:
        if kind == "ollama":
            return JSONResponse({"models": [{"name": f"{m}:latest", "model": f"{m}:latest"} for m in models]})
        return JSONResponse({"object": "list", "data": [{"id": m, "object": "model"} for m in models]})

    return [Route("/api/version", version), Route("/api/tags", listing), Route("/v1/models", listing)]


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


def _num_images(body: dict[str, Any]) -> int:
    """Images of an Ollama request (generate: `images`; chat: each message's `images`)."""
    messages = body.get("messages") or [body]
    return sum(len(m.get("images") or []) for m in messages)


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
        # With think, the model "thinks" first: how many images it was shown (as a vision model would).
        thought = f"I see {_num_images(body)} image(s)" if body.get("think") else ""

        def line(text: str, done: bool, tool_calls: Any = None, thinking: str = "") -> dict[str, Any]:
            obj: dict[str, Any] = {"model": model, "created_at": now_rfc3339()}
            if chat:
                obj["message"] = {"role": "assistant", "content": text}
                if tool_calls:
                    obj["message"]["tool_calls"] = tool_calls
                if thinking:
                    obj["message"]["thinking"] = thinking
            else:
                obj["response"] = text
                if thinking:
                    obj["thinking"] = thinking
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
            final = line("".join(words), True, calls, thought)
            return JSONResponse(final)

        async def stream() -> Any:
            finished = False
            try:
                if thought:
                    yield json.dumps(line("", False, thinking=thought)) + "\n"
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


# --- fake OpenAI-compatible server -----------------------------------------------------------


def _openai_images(messages: list[dict[str, Any]]) -> int:
    return sum(1 for m in messages if isinstance(m.get("content"), list)
               for part in m["content"] if part.get("type") == "image_url")


def fake_openai_app(models: list[str], requests: list[tuple[str, dict[str, Any]]]) -> Starlette:
    """The OpenAI wire format (SSE with [DONE], string tool arguments); appends every request to
    `requests`. Answers echo the last user text; with reasoning asked for (`reasoning_effort`, or
    `chat_template_kwargs.enable_thinking` as vLLM and llama.cpp take it) a `reasoning_content` comes first,
    saying how many image parts the request held. Embeddings are [3, 4, 0], unnormalised. /api/version is a
    404, as on any OpenAI server."""

    async def list_models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "me"}
                                                        for m in models]})

    async def chat(request: Request) -> Response:
        body = await request.json()
        requests.append((request.url.path, body))
        if body.get("model") not in models:
            return JSONResponse({"error": {"message": f"model {body.get('model')!r} not found", "type": "invalid_request_error",
                                           "param": "model", "code": None}}, status_code=404)
        messages = body.get("messages") or []
        user = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
        text = user if isinstance(user, str) else " ".join(p.get("text", "") for p in user if p.get("type") == "text")
        thinks = bool(body.get("reasoning_effort") or (body.get("chat_template_kwargs") or {}).get("enable_thinking"))
        reasoning = f"I see {_openai_images(messages)} image(s)" if thinks else None
        base = {"id": "chatcmpl-1", "created": 0, "model": body["model"]}
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        if not body.get("stream"):
            message = {"role": "assistant", "content": f"echo: {text}", "reasoning_content": reasoning}
            return JSONResponse({**base, "object": "chat.completion", "usage": usage,
                                 "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})

        def event(delta: dict[str, Any], finish: str | None = None) -> str:
            chunk = {**base, "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(chunk)}\n\n"

        async def events() -> Any:
            yield event({"role": "assistant", "content": ""})
            if reasoning:
                yield event({"reasoning_content": reasoning})
            yield event({"content": f"echo: {text}"})
            yield event({}, "stop")
            yield f"data: {json.dumps({**base, 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def embeddings(request: Request) -> Response:
        body = await request.json()
        requests.append((request.url.path, body))
        inputs = [body["input"]] if isinstance(body.get("input"), str) else body.get("input") or []
        # Unnormalised, as llama.cpp's and llama-cpp-python's servers return them.
        return JSONResponse({"object": "list", "model": body.get("model"), "usage": {"prompt_tokens": len(inputs),
                                                                                      "total_tokens": len(inputs)},
                             "data": [{"object": "embedding", "index": i, "embedding": [3.0, 4.0, 0.0]}
                                      for i, _ in enumerate(inputs)]})

    async def not_found(request: Request) -> Response:
        return JSONResponse({"detail": "Not Found"}, status_code=404)

    return Starlette(routes=[Route("/v1/models", list_models, methods=["GET"]),
                             Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/v1/embeddings", embeddings, methods=["POST"]),
                             Route("/api/version", not_found, methods=["GET"])])


def velollm_app(config: UpstreamConfig, proxy_only: bool = False) -> Any:
    """The real API app (velollm/api) with no native model and the gateway as its upstream."""
    from velollm.api.app import create_app
    from velollm.api.server_config import ServerConfig

    return create_app(ServerConfig(stats_interval_s=0), engines={},
                      upstream=UpstreamGateway(config, proxy_only=proxy_only))
