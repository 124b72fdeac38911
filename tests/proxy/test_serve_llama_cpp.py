"""`velollm serve --upstream <llama.cpp server>` as a real process, with the native demo model beside it:
same answers as the upstream directly, mixed routing under concurrency, listings, upstream down and back."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import ollama
import openai
import pytest
from gguf_fixture import write_tiny_llama_gguf

from tests.fast_enough import assert_fast
from tests.serve_process import start_serve, stop_serve

pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
from test_proxy_llama_cpp import MESSAGES, MODEL, LlamaServer

GREEDY = {"temperature": 0, "max_tokens": 12}


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory) -> Iterator[LlamaServer]:
    server = LlamaServer(str(write_tiny_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def velollm(llama_server, tmp_path_factory) -> Iterator[str]:
    """The built-in demo model natively, everything else from llama.cpp."""
    proc, url, _, _ = start_serve(tmp_path_factory.mktemp("serve"), "--upstream", llama_server.url,
                                    "--max-model-len", "256", "--kv-cache-memory", "16MiB")
    yield url
    stop_serve(proc)


def _openai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)


def test_openai_sdk_and_ollama_client_get_the_upstreams_answers(llama_server, velollm):
    direct, through = _openai(llama_server.url), _openai(velollm)
    params = {"model": MODEL, "messages": MESSAGES, **GREEDY}
    want = direct.chat.completions.create(**params)
    got = through.chat.completions.create(**params)
    assert got.choices[0].message.content == want.choices[0].message.content
    assert got.usage.completion_tokens == want.usage.completion_tokens > 0

    def streamed(client: openai.OpenAI) -> list[str]:
        return [c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **params)
                if c.choices]

    assert streamed(through) == streamed(direct) and "".join(streamed(direct))
    completion = {"model": MODEL, "prompt": "once upon", **GREEDY}
    assert (through.completions.create(**completion).choices[0].text
            == direct.completions.create(**completion).choices[0].text)

    client = ollama.Client(host=velollm, timeout=60)
    options = {"temperature": 0, "num_predict": 12}
    answer = client.chat(model=MODEL, messages=MESSAGES, options=options)
    assert answer.message.content == want.choices[0].message.content
    assert answer.eval_count == want.usage.completion_tokens
    parts = list(client.chat(model=MODEL, messages=MESSAGES, options=options, stream=True))
    assert "".join(p.message.content for p in parts) == "".join(streamed(direct))
    assert [p.done for p in parts].count(True) == 1 and parts[-1].done


def test_listings_merge_native_and_upstream(velollm):
    assert [m.id for m in _openai(velollm).models.list()] == ["demo", MODEL]
    assert [m.model for m in ollama.Client(host=velollm).list().models] == ["demo", MODEL]


def test_unknown_name_is_404_in_each_format(velollm):
    with pytest.raises(openai.NotFoundError):
        _openai(velollm).chat.completions.create(model="no-such-model", messages=MESSAGES)
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=velollm).chat(model="no-such-model", messages=MESSAGES)
    assert err.value.status_code == 404


def test_mixed_routing_32_concurrent_requests(llama_server, velollm):
    """Half to the native demo model, half to the upstream, all at once: each answer equals the same
    request made alone (greedy)."""
    prompts = [f"request {i}" for i in range(16)]

    def ask(url: str, model: str, prompt: str) -> str:
        r = httpx.post(f"{url}/v1/completions", json={"model": model, "prompt": prompt, **GREEDY}, timeout=120)
        r.raise_for_status()
        return r.json()["choices"][0]["text"]

    alone = {("demo", p): ask(velollm, "demo", p) for p in prompts[:4]}
    alone |= {(MODEL, p): ask(llama_server.url, MODEL, p) for p in prompts[:4]}
    jobs = [(model, p) for p in prompts for model in ("demo", MODEL)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: ask(velollm, *job), jobs))
    assert len(answers) == 32 and all(isinstance(a, str) for a in answers)
    for job, answer in zip(jobs, answers):
        if job in alone:
            assert answer == alone[job], job
    direct = {p: ask(llama_server.url, MODEL, p) for p in prompts}
    assert [a for (m, p), a in zip(jobs, answers) if m == MODEL] == [direct[p] for p in prompts]


def test_upstream_down_then_back_without_restarting_velollm(llama_server, velollm):
    client = ollama.Client(host=velollm, timeout=30)
    # the model answered once: the proxy knows it is the upstream's (run alone, this test had no listing of it,
    # and the first request after the stop was a 404 for an unknown model, not the 502)
    assert client.chat(model=MODEL, messages=MESSAGES, options={"num_predict": 1}).done
    llama_server.stop()
    try:
        def refused() -> None:
            with pytest.raises(ollama.ResponseError) as err:
                client.chat(model=MODEL, messages=MESSAGES)
            assert err.value.status_code == 502 and llama_server.url in err.value.error
            with pytest.raises(openai.InternalServerError) as oerr:
                _openai(velollm).chat.completions.create(model=MODEL, messages=MESSAGES)
            assert oerr.value.status_code == 502 and llama_server.url in oerr.value.message

        assert_fast(refused, 2)  # no retry or timeout waited out: one try of three within 2 s
        # the native model is unaffected and the listing still answers (the last one it got)
        assert client.generate(model="demo", prompt="x", options={"num_predict": 2}).eval_count == 2
        assert [m.model for m in client.list().models] == ["demo", MODEL]
    finally:
        llama_server.start()
    answer = client.chat(model=MODEL, messages=MESSAGES, options={"temperature": 0, "num_predict": 4})
    assert answer.done and answer.eval_count == 4
