"""A small Ollama stand-in for the CLI, status-page and router tests: /api/pull streams Ollama's NDJSON
progress (a pulled name joins the listing), /api/chat streams thinking then content, /api/show reports the
thinking capability, /api/ps lists the first model as loaded. Runs under a real
uvicorn in a thread (tests.api.conftest.ThreadedServer)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.api.conftest import ThreadedServer
from tests.serve_process import free_port

LAYER = "sha256:" + "ab" * 32


def _ndjson(lines: list[dict[str, Any]], delay_s: float = 0.02) -> StreamingResponse:
    async def body() -> Any:
        for line in lines:
            yield json.dumps(line) + "\n"
            await asyncio.sleep(delay_s)

    return StreamingResponse(body(), media_type="application/x-ndjson")


def pull_progress(total: int = 3_000_000) -> list[dict[str, Any]]:
    """What `ollama pull` streams: the manifest, one layer's bytes, verification, success."""
    steps = [{"status": "pulling manifest"}]
    steps += [{"status": f"pulling {LAYER[7:19]}", "digest": LAYER, "total": total, "completed": done}
              for done in (0, total // 3, 2 * total // 3, total)]
    return steps + [{"status": "verifying sha256 digest"}, {"status": "writing manifest"}, {"status": "success"}]


def push_progress(total: int = 2_000_000) -> list[dict[str, Any]]:
    """What `ollama push` streams (server/upload.go): the manifest, one layer's bytes, the manifest, success."""
    steps = [{"status": "retrieving manifest"}]
    steps += [{"status": f"pushing {LAYER[7:19]}", "digest": LAYER, "total": total, "completed": done}
              for done in (0, total // 2, total)]
    return steps + [{"status": "pushing manifest"}, {"status": "success"}]


def ollama_app(models: list[str]) -> Starlette:
    async def version(request: Request) -> Response:
        return JSONResponse({"version": "0.12.3"})

    async def tags(request: Request) -> Response:
        return JSONResponse({"models": [{"name": m, "model": m, "size": 1000, "digest": "cd" * 32,
                                         "modified_at": "2026-01-01T00:00:00Z", "details": {"family": "qwen3"}}
                                        for m in models]})

    async def pull(request: Request) -> Response:
        name = (await request.json()).get("model", "")
        if name.startswith("missing"):
            return _ndjson([{"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}])
        models.append(name if ":" in name else f"{name}:latest")
        return _ndjson(pull_progress())

    async def push(request: Request) -> Response:
        body = await request.json()
        name = body.get("model", "")
        if "/" not in name:  # Ollama's registry answers 401 for the library namespace
            return _ndjson([{"status": "retrieving manifest"}, {"error": "you are not authorized to push to this "
                                                                         "namespace, create the model under a "
                                                                         "namespace you own"}])
        insecure = [{"status": "(insecure registry)"}] if body.get("insecure") is True else []  # seen as sent
        return _ndjson(insecure + push_progress())

    async def ps(request: Request) -> Response:
        return JSONResponse({"models": [{"name": m, "model": m, "size": 5_000_000, "size_vram": 5_000_000,
                                         "digest": "cd" * 32, "details": {"family": "qwen3"},
                                         "expires_at": "2026-01-01T00:05:00Z", "context_length": 4096}
                                        for m in models[:1]]})

    async def show(request: Request) -> Response:
        name = str((await request.json()).get("model", ""))
        capabilities = ["completion", "vision"] if name.startswith("seer") else ["completion", "thinking"]
        return JSONResponse({"capabilities": capabilities, "template": "{{ .Prompt }}",
                             "parameters": 'temperature                    0.6', "license": "Apache 2.0",
                             "details": {"family": "qwen3", "parameter_size": "8.2B", "quantization_level": "Q4_K_M"},
                             "model_info": {"general.architecture": "qwen3", "qwen3.context_length": 40960,
                                            "qwen3.embedding_length": 4096}})

    async def chat(request: Request) -> Response:
        body = await request.json()
        model = body.get("model")
        if not body.get("messages"):
            return JSONResponse({"model": model, "created_at": "2026-01-01T00:00:00Z", "done": True,
                                 "done_reason": "load", "message": {"role": "assistant", "content": ""}})
        thinking = ["The user ", "says hi."] if body.get("think") else []
        lines = [{"model": model, "done": False, "message": {"role": "assistant", "content": "", "thinking": t}}
                 for t in thinking]
        last = body["messages"][-1]
        words = ("Hello", " there!") if not last.get("images") else (
            f"I see {len(last['images'])} image(s) of {sum(len(i) for i in last['images'])} base64 characters; ",
            f"the text was {last.get('content', '')!r}")
        lines += [{"model": model, "done": False, "message": {"role": "assistant", "content": c}} for c in words]
        lines.append({"model": model, "done": True, "done_reason": "stop", "message": {"role": "assistant", "content": ""},
                      "prompt_eval_count": 5, "eval_count": 2 + len(thinking), "eval_duration": 10_000_000,
                      "prompt_eval_duration": 1_000_000, "total_duration": 20_000_000})
        return _ndjson(lines)

    async def generate(request: Request) -> Response:
        body = await request.json()  # only what `ollama stop` sends: an empty prompt that unloads
        reason = "unload" if body.get("keep_alive") == 0 else "load"
        return JSONResponse({"model": body.get("model"), "created_at": "2026-01-01T00:00:00Z", "response": "",
                             "done": True, "done_reason": reason})

    return Starlette(routes=[Route("/api/version", version, methods=["GET", "HEAD"]),
                             Route("/api/generate", generate, methods=["POST"]),
                             Route("/api/tags", tags, methods=["GET"]), Route("/api/pull", pull, methods=["POST"]),
                             Route("/api/push", push, methods=["POST"]),
                             Route("/api/show", show, methods=["POST"]), Route("/api/chat", chat, methods=["POST"]),
                             Route("/api/ps", ps, methods=["GET"])])


@contextmanager
def fake_ollama(models: list[str] | None = None) -> Iterator[str]:
    """The stand-in on a free port; yields its URL."""
    port = free_port()
    with ThreadedServer(ollama_app(list(models or ["thinker:latest"])), port):
        yield f"http://127.0.0.1:{port}"
