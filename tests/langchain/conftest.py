"""Servers for the LangChain tests, one of each per package run.

- `demo`: `velollm serve --model demo` (random weights: grammar-constrained answers are still valid, seeded
  ones repeat), with the tiny random Qwen3 (real Qwen3 template: thinking) loaded on demand by its path.
- `scripted`: the real API app over a stub engine that writes what a test scripts (a random model cannot be
  made to call a tool on its own, and Ollama has no tool_choice), uvicorn in a thread.
- `demo_proxy` / `scripted_proxy`: `velollm serve --proxy-only` with one of those as its Ollama upstream: told
  `--upstream-kind ollama`, since the kind probe finds a VeloLLM and passes /v1 through, where these tests stand
  it in for an Ollama (no Ollama binary here) and check the OpenAI <-> Ollama conversion.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.api.conftest import ThreadedServer, free_port, stub_app
from tests.api.test_tools_scripted import ScriptedEngine
from tests.serve_process import start_serve, stop_serve
from velollm.engine.loader.demo import DEMO_NAME
from velollm.engine.text.tokenizer import Tokenizer


@dataclass(frozen=True)
class Demo:
    url: str
    tokenizer: Tokenizer  # the demo model's, to count prompt tokens


@dataclass(frozen=True)
class Qwen3:
    url: str  # the demo server's: it loads the model on demand
    name: str  # the model's name there (its folder)
    tokenizer: Tokenizer


@dataclass(frozen=True)
class Scripted:
    url: str
    engine: ScriptedEngine

    def script(self, *texts: str) -> ScriptedEngine:
        self.engine.script, self.engine.num_calls = list(texts), 0
        self.engine.seen_prompts.clear()
        return self.engine

    def prompt(self, i: int) -> str:
        return self.engine.tokenizer.decode(self.engine.seen_prompts[i])


@pytest.fixture(scope="package")
def demo(tmp_path_factory) -> Iterator[Demo]:
    tmp = tmp_path_factory.mktemp("langchain-demo")
    proc, url, _, _ = start_serve(tmp, "--model", "demo", "--max-model-len", "2048", "--kv-cache-memory", "64MiB",
                                  "--no-upstream", "--device", "cpu")
    try:
        yield Demo(url, Tokenizer.from_folder(tmp / "cache" / DEMO_NAME))
    finally:
        stop_serve(proc)


@pytest.fixture(scope="package")
def qwen3(demo: Demo, tiny_qwen3: Path) -> Qwen3:
    return Qwen3(demo.url, str(tiny_qwen3), Tokenizer.from_folder(tiny_qwen3, model_config={"model_type": "qwen3"}))


@pytest.fixture(scope="package")
def scripted() -> Iterator[Scripted]:
    engine = ScriptedEngine()
    port = free_port()
    with ThreadedServer(stub_app(engine, port=port, tool_retries=0), port):
        yield Scripted(f"http://127.0.0.1:{port}", engine)


def _proxy(tmp: Path, upstream: str) -> Iterator[str]:
    proc, url, _, _ = start_serve(tmp, "--proxy-only", "--upstream", upstream, "--upstream-kind", "ollama")
    try:
        yield url
    finally:
        stop_serve(proc)


@pytest.fixture(scope="package")
def demo_proxy(demo: Demo, tmp_path_factory) -> Iterator[str]:
    yield from _proxy(tmp_path_factory.mktemp("langchain-proxy"), demo.url)


@pytest.fixture(scope="package")
def scripted_proxy(scripted: Scripted, tmp_path_factory) -> Iterator[str]:
    yield from _proxy(tmp_path_factory.mktemp("langchain-scripted-proxy"), scripted.url)
