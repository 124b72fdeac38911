"""Backend.probe's default path, against scripted answers (the live cases: test_router_velollm_upstream_health):
a VeloLLM behind kind auto / ollama goes to /health once its /api/version says so, back to /api/version when
its address answers /health with a 404 (an Ollama took it); an Ollama is never asked for /health."""

from __future__ import annotations

from typing import Any

import pytest

from velollm.router.backend import Backend
from velollm.router.config import BackendConfig, RouterConfig

OLLAMA = {"/api/version": (200, {"version": "0.12.0"})}
VELOLLM = {"/api/version": (200, {"version": "0.12.0", "velollm": "0.1.0"}), "/health": (200, {"status": "ok"})}
DEAD = {**VELOLLM, "/health": (503, {"status": "error", "error": "the engine of 'demo' died (RuntimeError: x)"})}


def scripted(kind: str, answers: dict[str, tuple[int, Any]]) -> tuple[Backend, list[str]]:
    backend = Backend(BackendConfig(name="b", url="http://127.0.0.1:9", kind=kind), RouterConfig())
    asked: list[str] = []

    async def get(path: str) -> tuple[int, Any]:
        asked.append(path)
        return answers.get(path, (404, "404 page not found"))

    backend._get = get  # type: ignore[method-assign]
    return backend, asked


@pytest.mark.parametrize("kind", ["auto", "ollama"])
async def test_a_velollm_is_checked_on_health(kind):
    backend, asked = scripted(kind, DEAD)
    assert await backend.probe() == "GET /health answered 503 (the engine of 'demo' died (RuntimeError: x))"
    assert asked == ["/api/version", "/health"] and backend.velollm_version == "0.1.0"
    asked.clear()
    assert await backend.probe() is not None and asked == ["/health"]  # remembered: one request per check


@pytest.mark.parametrize("kind", ["auto", "ollama"])
async def test_an_ollama_is_checked_on_api_version_only(kind):
    backend, asked = scripted(kind, OLLAMA)
    assert await backend.probe() is None and await backend.probe() is None
    assert asked == ["/api/version", "/api/version"] and backend.velollm_version is None


async def test_an_ollama_at_a_former_velollms_address_is_checked_on_api_version_again():
    answers = dict(VELOLLM)
    backend, asked = scripted("auto", answers)
    assert await backend.probe() is None and backend.velollm_version == "0.1.0"
    answers.clear()
    answers.update(OLLAMA)  # an Ollama took the address: no /health there
    asked.clear()
    assert await backend.probe() is None and asked == ["/health", "/api/version"]
    assert backend.velollm_version is None


async def test_kinds_that_say_what_they_are_keep_their_path():
    backend, asked = scripted("velollm", OLLAMA)  # a velollm backend has /health even when it looks like Ollama
    assert await backend.probe() == "GET /health answered 404" and asked == ["/health"]
    backend, asked = scripted("openai", VELOLLM)  # an OpenAI server: /v1/models (kind known, no detection)
    backend.upstream._kind = "openai"
    assert await backend.probe() == "GET /v1/models answered 404" and asked == ["/v1/models"]


async def test_a_velollm_that_loads_or_drains_says_so():
    backend, _ = scripted("ollama", {**VELOLLM, "/health": (503, {"status": "draining", "running": 2})})
    assert await backend.probe() == "GET /health answered 503 (draining)"
