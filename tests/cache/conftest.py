"""The live server the serve-level cache tests share (one per test module): `velollm serve --semantic-cache`
on the demo model, and an openai client for it."""

from __future__ import annotations

import openai
import pytest

from tests.api.conftest import ServerHandle
from tests.serve_process import start_serve, stop_serve


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache-serve")
    # 512: room for a forced tool call after the tools the demo template renders (about 220 tokens)
    proc, url, log, _ = start_serve(tmp, "--semantic-cache", "--max-model-len", "512", "--kv-cache-memory", "32MiB")
    try:
        yield ServerHandle("live", url, log=log)
    finally:
        stop_serve(proc)


def client(server: ServerHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
