"""On-demand loading from an Ollama store (`--max-loaded-models 1`, keep_alive, /api/ps), and a second
VeloLLM instance (`--proxy-only`) with the first one as its Ollama upstream."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from gguf_fixture import write_tiny_llama_gguf

from tests.gguf.test_ollama_store import make_store
from tests.serve_process import start_serve, stop_serve

A, B = "tiny-a:latest", "tiny-b:latest"
RAW = {"raw": True, "stream": False, "options": {"temperature": 0, "num_predict": 8}}
USER = [{"role": "user", "content": "the cat sat on"}]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    for seed, name in enumerate(("tiny-a", "tiny-b")):
        gguf = write_tiny_llama_gguf(root / f"{name}.gguf", seed=seed)
        make_store(root / "models", gguf, ("registry.ollama.ai", "library", name, "latest"))
    return root / "models"


@pytest.fixture(scope="module")
def native(store, tmp_path_factory) -> Iterator[str]:
    """demo pinned (the default --model); the store's models load on demand, one at a time."""
    proc, url, _, _ = start_serve(tmp_path_factory.mktemp("native"), "--no-upstream", "--max-loaded-models", "1",
                                  "--max-model-len", "256", "--kv-cache-memory", "16MiB",
                                  env={"OLLAMA_MODELS": str(store)})
    yield url
    stop_serve(proc)


@pytest.fixture(scope="module")
def proxy(native, tmp_path_factory) -> Iterator[str]:
    proc, url, _, _ = start_serve(tmp_path_factory.mktemp("proxy"), "--proxy-only", "--upstream", native)
    yield url
    stop_serve(proc)


def generate(url: str, model: str, prompt: str = "once upon a time", **extra) -> dict:
    r = httpx.post(f"{url}/api/generate", json={"model": model, "prompt": prompt, **RAW, **extra}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def until_unloaded(url: str, name: str, timeout_s: float = 30.0) -> None:
    """Waits until `name` is no longer running: an engine is shut down in a worker thread after its answer, which
    a loaded machine may run seconds late (waits of 2-5 s were a flake, not a bound of the product's)."""
    deadline = time.monotonic() + timeout_s
    while name in loaded(url) and time.monotonic() < deadline:
        time.sleep(0.05)


def loaded(url: str) -> dict[str, dict]:
    return {m["name"]: m for m in httpx.get(f"{url}/api/ps", timeout=10).json()["models"]}


def test_models_load_on_demand_one_at_a_time(native):
    first_a = generate(native, "tiny-a")
    assert first_a["eval_count"] == 8 and first_a["response"]
    assert set(loaded(native)) == {"demo", A}
    first_b = generate(native, "tiny-b")
    assert set(loaded(native)) == {"demo", B}  # A was unloaded to make room
    assert first_b["response"] != first_a["response"]  # different weights: really the other model
    for _ in range(2):  # alternate: each reload answers exactly as before (greedy)
        assert generate(native, "tiny-a:latest")["response"] == first_a["response"]
        assert generate(native, "tiny-b")["response"] == first_b["response"]
    # both at once: one waits for the other to finish before its model replaces it
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda m: generate(native, m)["response"], ["tiny-a", "tiny-b"] * 2))
    assert answers == [first_a["response"], first_b["response"]] * 2
    assert generate(native, "demo")["eval_count"] == 8  # the pinned model was there all along


def test_ps_keep_alive_and_unload(native):
    generate(native, "tiny-a", keep_alive="10m")
    ps = loaded(native)
    expires = dt.datetime.fromisoformat(ps[A]["expires_at"].replace("Z", "+00:00"))
    remaining = (expires - dt.datetime.now(dt.timezone.utc)).total_seconds()
    assert 540 < remaining <= 601, remaining
    assert ps["demo"]["expires_at"] > "2200"  # pinned: never
    assert ps[A]["context_length"] == 256 and ps[A]["details"]["format"] == "gguf"

    r = httpx.post(f"{native}/api/generate", json={"model": "tiny-a", "keep_alive": 0}, timeout=60).json()
    assert r["done"] and r["done_reason"] == "unload"
    until_unloaded(native, A)
    assert set(loaded(native)) == {"demo"}

    # `ollama stop` of a model that is not loaded: nothing is loaded for it (with --max-loaded-models 1
    # a load would have evicted tiny-a), and the answer is still an unload.
    generate(native, "tiny-a", keep_alive="10m")
    for path, extra in (("/api/generate", {}), ("/api/chat", {"messages": []})):
        r = httpx.post(f"{native}{path}", json={"model": "tiny-b", "keep_alive": 0, **extra}, timeout=60)
        assert r.status_code == 200 and r.json()["done_reason"] == "unload", r.text
        assert set(loaded(native)) == {"demo", A}
    r = httpx.post(f"{native}/api/generate", json={"model": "no-such-model", "keep_alive": 0}, timeout=60)
    assert r.status_code == 404 and "not found" in r.json()["error"]
    httpx.post(f"{native}/api/generate", json={"model": "tiny-a", "keep_alive": 0}, timeout=60)

    generate(native, "tiny-b", keep_alive=0)  # keep_alive 0 on a real request: unloaded once it is done
    until_unloaded(native, B)
    assert set(loaded(native)) == {"demo"}

    # A request that fails after its model loaded (prompt over the context, with truncate: false: by default it
    # is cut, as Ollama cuts it) still lets it go.
    r = httpx.post(f"{native}/api/generate", json={"model": "tiny-a", "prompt": "the cat " * 300, "keep_alive": 0,
                                                     "truncate": False,
                                                     **{k: v for k, v in RAW.items() if k != "raw"}}, timeout=60)
    assert r.status_code == 400, r.text
    until_unloaded(native, A)
    assert set(loaded(native)) == {"demo"}


def test_listing_holds_pinned_and_store_models_and_unknown_names_404(native):
    assert [m["name"] for m in httpx.get(f"{native}/api/tags").json()["models"]][:1] == ["demo"]
    assert {A, B} <= {m["name"] for m in httpx.get(f"{native}/api/tags").json()["models"]}
    r = httpx.post(f"{native}/api/generate", json={"model": "not-in-the-store", "prompt": "x"})
    assert r.status_code == 404 and "not-in-the-store" in r.json()["error"]
    r = httpx.post(f"{native}/v1/completions", json={"model": "not-in-the-store", "prompt": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_show_and_model_card_do_not_load_and_listing_is_unique(native):
    generate(native, "tiny-a", keep_alive="10m")
    before = set(loaded(native))
    assert B not in before
    shown = httpx.post(f"{native}/api/show", json={"model": "tiny-b"}, timeout=60)
    card = httpx.get(f"{native}/v1/models/tiny-b", timeout=60)
    assert shown.status_code == card.status_code == 200, shown.text
    assert card.json()["id"] == B and card.json()["max_model_len"] == 512  # the GGUF's context length
    assert set(loaded(native)) == before  # like Ollama: describing a model does not load it
    ids = [m["id"] for m in httpx.get(f"{native}/v1/models").json()["data"]]
    assert ids[0] == "demo" and sorted(ids) == sorted(["demo", A, B])  # tiny-a is loaded and in the store: once
    generate(native, "tiny-b")
    assert B in loaded(native)
    assert httpx.post(f"{native}/api/show", json={"model": "tiny-b"}).json() == shown.json()  # same facts loaded
    r = httpx.post(f"{native}/api/show", json={"model": "not-in-the-store"})
    assert r.status_code == 404


def test_answers_name_the_model_as_the_request_spelled_it(native):
    """Ollama answers `model: req.Model` on every route, /v1 included: a store model loaded on demand under its
    canonical "tiny-a:latest" is "tiny-a" (or "Tiny-A") in the answer, whole and streamed."""
    import openai

    client = openai.OpenAI(base_url=f"{native}/v1", api_key="x", max_retries=0, timeout=60)
    for name in ("tiny-a", "Tiny-A"):
        assert client.chat.completions.create(model=name, messages=USER, max_tokens=2).model == name
        chunks = list(client.chat.completions.create(model=name, messages=USER, max_tokens=2, stream=True,
                                                     stream_options={"include_usage": True}))
        assert len(chunks) > 2 and {c.model for c in chunks} == {name}
        assert client.completions.create(model=name, prompt="once", max_tokens=2).model == name
        chunks = list(client.completions.create(model=name, prompt="once", max_tokens=2, stream=True,
                                                stream_options={"include_usage": True}))
        assert len(chunks) > 1 and {c.model for c in chunks} == {name}
        response = httpx.post(f"{native}/v1/responses", json={"model": name, "input": "hi", "max_output_tokens": 16},
                              timeout=60)
        assert response.status_code == 200 and response.json()["model"] == name, response.text
        assert generate(native, name)["model"] == name
        chat = httpx.post(f"{native}/api/chat", json={"model": name, "messages": USER, **RAW}, timeout=60).json()
        assert chat["model"] == name


# --- a second VeloLLM in front of the first ----------------------------------------------------


def _without_timings(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if not k.endswith("duration") and k != "created_at"}


@pytest.mark.parametrize("path, body", [
    ("/api/generate", {"model": "demo", "prompt": "once upon a time", **RAW}),
    ("/api/generate", {"model": "demo", "prompt": "once upon a time", "options": {"temperature": 0,
                                                                                  "num_predict": 8}}),
    ("/api/chat", {"model": "demo", "messages": USER, "stream": False, "options": {"temperature": 0, "num_predict": 8}}),
    ("/api/chat", {"model": "demo", "messages": USER, "options": {"temperature": 0, "num_predict": 8}}),
    ("/api/generate", {"model": "tiny-a", "prompt": "once upon a time", **RAW}),
])
def test_native_endpoints_pass_through(native, proxy, path, body):
    def call(url: str) -> list[dict]:
        with httpx.stream("POST", url + path, json=body, timeout=120) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("application/json" if body.get("stream") is False
                                                        else "application/x-ndjson")
            import json

            return [_without_timings(json.loads(line)) for line in r.iter_lines() if line]

    direct, through = call(native), call(proxy)
    assert through == direct and len(direct) >= (1 if body.get("stream") is False else 3)


@pytest.mark.parametrize("path, body", [
    ("/api/generate", {"model": "demo", "prompt": "once upon a time", "raw": True}),
    ("/api/chat", {"model": "demo", "messages": USER}),
])
def test_shift_false_reaches_the_upstream(native, proxy, path, body):
    """Ollama's `shift: false` goes to an Ollama upstream as sent: the answer ends when the context is full
    (num_ctx - prompt + 1 tokens, done_reason "length"), one token longer than the shifting default's room."""
    size = httpx.post(f"{native}{path}", json={**body, "stream": False, "options": {"num_predict": 1}},
                      timeout=120).json()["prompt_eval_count"]
    options = {"num_ctx": size + 2, "temperature": 0}
    for shift, want in ((False, 3), (True, 2)):
        answers = [httpx.post(f"{url}{path}", json={**body, "stream": False, "shift": shift, "options": options},
                              timeout=120).json() for url in (native, proxy)]
        assert [(a["prompt_eval_count"], a["eval_count"], a["done_reason"]) for a in answers] == \
            [(size, want, "length")] * 2, answers


def test_listing_show_and_ps_pass_through(native, proxy):
    generate(native, "tiny-a")
    assert httpx.get(f"{proxy}/api/tags").json() == httpx.get(f"{native}/api/tags").json()
    assert httpx.get(f"{proxy}/api/ps").json()["models"] and (
        [m["name"] for m in httpx.get(f"{proxy}/api/ps").json()["models"]]
        == [m["name"] for m in httpx.get(f"{native}/api/ps").json()["models"]])
    shown = {p: httpx.post(f"{p}/api/show", json={"model": "demo"}).json() for p in (native, proxy)}
    assert shown[proxy] == shown[native] and shown[native]["details"]
    for body in ({"model": A}, {"model": A, "verbose": True}):  # a store GGUF: its tensors, arrays null or whole
        shown = {p: httpx.post(f"{p}/api/show", json=body, timeout=60).json() for p in (native, proxy)}
        assert shown[proxy] == shown[native] and shown[native]["tensors"]
        tokens = shown[proxy]["model_info"]["tokenizer.ggml.tokens"]
        assert (tokens is None) if "verbose" not in body else len(tokens) > 5
    r = httpx.post(f"{proxy}/api/chat", json={"model": "nowhere", "messages": USER})
    assert r.status_code == 404 and "nowhere" in r.json()["error"]  # the upstream's own 404, passed on


def test_openai_requests_converted_there_and_back(native, proxy):
    import openai

    direct = openai.OpenAI(base_url=f"{native}/v1", api_key="x", max_retries=0, timeout=60)
    through = openai.OpenAI(base_url=f"{proxy}/v1", api_key="x", max_retries=0, timeout=60)
    chat = {"model": "demo", "messages": USER, "temperature": 0, "max_tokens": 8}
    want, got = direct.chat.completions.create(**chat), through.chat.completions.create(**chat)
    assert got.choices[0].message.content == want.choices[0].message.content
    assert got.choices[0].finish_reason == want.choices[0].finish_reason == "length"
    assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (want.usage.prompt_tokens, 8)

    def streamed(client) -> str:
        chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **chat))
        assert chunks[-1].usage.completion_tokens == 8
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    assert streamed(through) == streamed(direct) == want.choices[0].message.content
    completion = {"model": "demo", "prompt": "once upon a time", "temperature": 0, "max_tokens": 8}
    assert (through.completions.create(**completion).choices[0].text
            == direct.completions.create(**completion).choices[0].text)
    assert [m.id for m in through.models.list()] == [m["name"] for m in
                                                    httpx.get(f"{native}/api/tags").json()["models"]]


def test_paths_from_clients_only_on_loopback_unless_allowed(store, tmp_path):
    """A server open to the network does not let clients load (or probe) files by path."""
    gguf = str(store.parent / "tiny-a.gguf")
    body = {"model": gguf, "prompt": "the cat", **RAW}
    (tmp_path / "open").mkdir()
    (tmp_path / "allowed").mkdir()
    proc, url, _, _ = start_serve(tmp_path / "open", "--host", "0.0.0.0", "--no-upstream", "--max-model-len", "256",
                                  "--kv-cache-memory", "16MiB", env={"OLLAMA_MODELS": str(store)})
    try:
        for model in (gguf, str(store.parent / "no-such.gguf"), "./models", "~/x"):
            r = httpx.post(f"{url}/api/generate", json={**body, "model": model}, timeout=60)
            assert r.status_code == 404 and "does not load paths sent by clients" in r.json()["error"], r.text
        assert generate(url, "tiny-a")["done"]  # store names still load on demand
    finally:
        stop_serve(proc)
    proc, url, _, _ = start_serve(tmp_path / "allowed", "--host", "0.0.0.0", "--allow-client-paths", "--no-upstream",
                                  "--max-model-len", "256", "--kv-cache-memory", "16MiB")
    try:
        assert generate(url, gguf)["done"]
    finally:
        stop_serve(proc)
