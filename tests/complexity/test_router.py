"""ComplexityRouter: the virtual name, decisions from bodies, the kNN built in the background."""

from __future__ import annotations

import asyncio

import pytest

from velollm.complexity import ComplexityRouter, RoutingPolicy
from velollm.complexity.knn import KnnIndex
from velollm.complexity.policy import KnnSettings

from tests.complexity.test_knn import AxisEmbedder

POLICY = {"name": "smart", "default": "small", "rules": [{"name": "code", "model": "coder", "code": True}],
          "knn": {"k": 1, "min_similarity": 0.5, "examples": [{"text": "math", "model": "big"}]}}


def _router(loader=None) -> ComplexityRouter:
    policy = RoutingPolicy.from_table(POLICY)
    return ComplexityRouter(policy, loader or (lambda s: KnnIndex(s, AxisEmbedder())))


def _chat(text: str) -> dict:
    return {"model": "smart", "messages": [{"role": "user", "content": text}]}


def test_handles_the_virtual_name_only():
    router = _router()
    assert router.handles("smart") and router.handles("smart:latest") and router.handles("SMART")
    assert not router.handles("small") and not router.handles("auto")


def test_rules_then_knn_then_default():
    async def run():
        router = _router()
        router.start()
        try:
            code = await router.decide(_chat("def f(x):\n    return x"), "/v1/chat/completions")
            knn = await router.decide(_chat("math"), "/api/chat")
            default = await router.decide({"prompt": "chat"}, "/api/generate")
        finally:
            await router.close()
        return code, knn, default

    code, knn, default = asyncio.run(run())
    assert (code.route, code.model) == ("code", "coder")
    assert (knn.route, knn.model) == ("knn", "big")
    assert (default.route, default.model, default.reason) == ("default", "small", "no rule matched")


def test_a_broken_knn_falls_back_to_rules_and_default_and_says_why():
    def broken(settings: KnnSettings) -> KnnIndex:
        raise FileNotFoundError("no embedding model")

    async def run():
        router = _router(broken)
        try:
            return await router.decide(_chat("math"), "/v1/chat/completions")
        finally:
            await router.close()

    d = asyncio.run(run())
    assert (d.route, d.model) == ("default", "small")
    assert "kNN unavailable: FileNotFoundError: no embedding model" in d.reason


def test_big_bodies_are_read_off_the_event_loop():
    async def run():
        router = _router()
        body = _chat("word " * 20_000 + "\n```\ncode\n```")
        try:
            return await router.decide(body, "/v1/chat/completions")
        finally:
            await router.close()

    assert asyncio.run(run()).route == "code"


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/responses"])
def test_every_api_is_read(path):
    body = {"prompt": "def f(x):\n    return x"} if path == "/v1/completions" else {"input": "def f(x):\n    return x"}

    async def run():
        router = _router()
        try:
            return await router.decide(body, path)
        finally:
            await router.close()

    assert asyncio.run(run()).model == "coder"
