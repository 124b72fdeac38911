"""`velollm serve --semantic-cache` on the demo model, through the official openai and ollama clients."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import ollama
import openai
import pytest

from tests.api.conftest import ServerHandle
from tests.cache.conftest import client
from tests.serve_process import REPO, start_serve, stop_serve

pytestmark = pytest.mark.slow


def ask(server: ServerHandle, question: str, system: str | None = None, **kw):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    raw = client(server).chat.completions.with_raw_response.create(model="demo", messages=messages,
                                                                    **{"max_tokens": 6, "temperature": 0, **kw})
    return raw.headers.get("x-velollm-cache"), raw.parse()


def test_exact_hit_same_answer_cached_tokens_and_metrics(cached):
    requests_before = cached.metric("velollm_requests_total", model="demo", endpoint="/v1/chat/completions",
                                    status="200")
    label, first = ask(cached, "Name three rivers in Europe.")
    assert label == "miss"
    cached.wait_metric("velollm_cache_entries", lambda v: v >= 1)
    label, again = ask(cached, "Name three rivers in Europe.")
    assert label == "hit-exact"
    assert again.choices[0].message.content == first.choices[0].message.content and again.id != first.id
    assert again.usage.prompt_tokens == first.usage.prompt_tokens
    assert again.usage.prompt_tokens_details.cached_tokens == first.usage.prompt_tokens
    assert cached.metric("velollm_cache_hits_total", kind="exact") >= 1
    assert cached.metric("velollm_requests_total", model="demo", endpoint="/v1/chat/completions",
                         status="200") == requests_before + 2  # the hit is counted as a request
    assert cached.metric("velollm_cache_lookup_seconds_count", tier="exact") >= 2


def test_a_hit_streams_like_a_live_answer(cached):
    label, first = ask(cached, "Write one word about snow.")
    cached.wait_metric("velollm_cache_entries", lambda v: v >= 2)
    with client(cached).chat.completions.with_streaming_response.create(
            model="demo", messages=[{"role": "user", "content": "Write one word about snow."}], max_tokens=6,
            temperature=0, stream=True, stream_options={"include_usage": True}) as response:
        assert response.headers["x-velollm-cache"] == "hit-exact"
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == first.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == first.usage.prompt_tokens


def test_paraphrase_hits_near_misses_and_other_contexts_do_not(cached):
    _, first = ask(cached, "What is the capital of Australia?")
    cached.wait_metric("velollm_cache_entries", lambda v: v >= 3)
    label, para = ask(cached, "What's the capital city of Australia?")
    assert label == "hit-semantic" and para.choices[0].message.content == first.choices[0].message.content
    assert ask(cached, "What is the capital of Austria?")[0] == "miss"
    assert ask(cached, "What is the capital of Australia?", system="Answer in French.")[0] == "miss"
    assert cached.metric("velollm_cache_hits_total", kind="semantic") >= 1


WEATHER = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 6}}, "required": ["city"]}}}]
FORCED = {"type": "function", "function": {"name": "get_weather"}}
CALL_TOKENS = 100  # the demo tokenizer spends a token or two per character of the call's JSON


def test_a_hit_gets_fresh_tool_call_ids(cached):
    """Agents key tool results on the call ids: turns answered from the cache (exact or semantic, whole or
    streamed) must each get new ones, and a new completion id."""
    def weather(question: str):
        return ask(cached, question, tools=WEATHER, tool_choice=FORCED, max_tokens=CALL_TOKENS)

    _, first = weather("What is the weather in Oslo today?")
    assert first.choices[0].message.tool_calls, first
    cached.wait_metric("velollm_cache_entries", lambda v: v >= 4)
    label, again = weather("What is the weather in Oslo today?")
    label_para, para = weather("What's the weather in Oslo today?")
    assert (label, label_para) == ("hit-exact", "hit-semantic")
    streamed = list(client(cached).chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "What is the weather in Oslo today?"}], tools=WEATHER,
        tool_choice=FORCED, max_tokens=CALL_TOKENS, temperature=0, stream=True))
    streamed_ids = [d.id for c in streamed if c.choices for d in c.choices[0].delta.tool_calls or [] if d.id]
    answers = [first, again, para]
    ids = [c.id for a in answers for c in a.choices[0].message.tool_calls] + streamed_ids
    assert len(ids) == 4 and len(set(ids)) == 4
    assert len({a.id for a in answers} | {streamed[0].id}) == 4
    calls = [[(c.function.name, c.function.arguments) for c in a.choices[0].message.tool_calls] for a in answers]
    assert calls[1] == calls[2] == calls[0]


def test_per_request_directives(cached):
    ask(cached, "Count to three.")
    label, _ = ask(cached, "Count to three.", extra_body={"cache": {"no-cache": True}})
    assert label == "bypass"
    raw = client(cached).chat.completions.with_raw_response.create(
        model="demo", messages=[{"role": "user", "content": "Spell the word cat."}], max_tokens=4, temperature=0,
        extra_headers={"Cache-Control": "no-store"})
    assert raw.headers["x-velollm-cache"] == "miss"
    assert ask(cached, "Spell the word cat.")[0] == "miss"  # was not stored
    with pytest.raises(openai.BadRequestError) as err:
        ask(cached, "Count to three.", extra_body={"cache": {"ttl": "soon"}})
    assert "cache.ttl" in str(err.value) and err.value.body["param"] == "cache"
    raw = client(cached).chat.completions.with_raw_response.create(
        model="demo", messages=[{"role": "user", "content": "Pick two colors."}], max_tokens=4, temperature=0.9, n=2)
    assert raw.headers["x-velollm-cache"] == "bypass" and len(raw.parse().choices) == 2
    assert cached.metric("velollm_cache_bypass_total", reason="n_sampled") >= 1


def test_completions_endpoint(cached):
    def complete(stream: bool):
        return httpx.post(f"{cached.url}/v1/completions", json={"model": "demo", "prompt": "Once upon a time",
                                                                "max_tokens": 5, "temperature": 0, "stream": stream},
                          timeout=60)

    entries = cached.metric("velollm_cache_entries")
    first = complete(False)
    assert first.headers["x-velollm-cache"] == "miss"
    cached.wait_metric("velollm_cache_entries", lambda v: v > entries)
    hit = complete(False)
    assert hit.headers["x-velollm-cache"] == "hit-exact"
    assert hit.json()["choices"][0]["text"] == first.json()["choices"][0]["text"]
    streamed = client(cached).completions.create(model="demo", prompt="Once upon a time", max_tokens=5,
                                                 temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == first.json()["choices"][0]["text"]


def test_ollama_chat_and_generate(cached):
    ol = ollama.Client(host=cached.url, timeout=60)
    options = {"temperature": 0, "num_predict": 5}
    first = ol.chat(model="demo", messages=[{"role": "user", "content": "Say hello."}], options=options)
    cached.wait_metric("velollm_cache_entries", lambda v: v >= 6)
    streamed = list(ol.chat(model="demo", messages=[{"role": "user", "content": "Say hello."}], options=options,
                            stream=True))
    assert "".join(p.message.content for p in streamed) == first.message.content and streamed[-1].done
    r = httpx.post(f"{cached.url}/api/chat", json={"model": "demo", "stream": False, "options": options,
                                                   "messages": [{"role": "user", "content": "Say hello."}]})
    assert r.headers["x-velollm-cache"] == "hit-exact" and r.json()["message"]["content"] == first.message.content
    gen = ol.generate(model="demo", prompt="The sky is", options=options)
    cached.wait_metric("velollm_cache_entries", lambda v: v >= 7)
    again = ol.generate(model="demo", prompt="The sky is", options=options)
    assert again.response == gen.response and again.eval_count == gen.eval_count
    r = httpx.post(f"{cached.url}/api/generate", json={"model": "demo", "prompt": "The sky is", "options": options})
    assert r.headers["x-velollm-cache"] == "hit-exact"
    assert r.headers["content-type"].startswith("application/x-ndjson")
    r = httpx.post(f"{cached.url}/api/generate", json={"model": "demo", "cache": 5})
    assert r.status_code == 400 and "cache must be an object" in r.json()["error"]


def test_restart_keeps_entries_and_a_corrupt_file_is_set_aside(tmp_path):
    args = ("--cache", "--max-model-len", "256", "--kv-cache-memory", "32MiB")
    body = {"model": "demo", "messages": [{"role": "user", "content": "Remember me."}], "max_tokens": 4,
            "temperature": 0}
    proc, url, log, _ = start_serve(tmp_path, *args)
    try:
        first = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert first.headers["x-velollm-cache"] == "miss"
    finally:
        stop_serve(proc)
    proc, url, log, _ = start_serve(tmp_path, *args)
    try:
        again = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert again.headers["x-velollm-cache"] == "hit-exact"
        assert again.json()["choices"] == first.json()["choices"]
    finally:
        stop_serve(proc)
    env = {"VELOLLM_CACHE": str(tmp_path / "cache")}
    stats = subprocess.run([sys.executable, "-m", "velollm.cli", "cache", "stats", "--json"], cwd=REPO, env=env,
                           capture_output=True, text=True, check=True)
    assert json.loads(stats.stdout)["entries"] == 1
    (tmp_path / "cache" / "cache.sqlite3").write_bytes(b"garbage" * 1000)
    for suffix in ("-wal", "-shm"):
        (tmp_path / "cache" / f"cache.sqlite3{suffix}").unlink(missing_ok=True)
    proc, url, log, _ = start_serve(tmp_path, *args)
    try:
        assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).headers["x-velollm-cache"] == "miss"
    finally:
        stop_serve(proc)
    assert "is unreadable" in log.read_text() and list((tmp_path / "cache").glob("cache.sqlite3.corrupt-*"))
    cleared = subprocess.run([sys.executable, "-m", "velollm.cli", "cache", "clear"], cwd=REPO, env=env,
                             capture_output=True, text=True, check=True)
    assert "removed 1 entries" in cleared.stdout


def test_identical_requests_in_flight_at_once_are_generated_once(cached):
    import asyncio

    async def ask_all() -> list:
        async with openai.AsyncOpenAI(base_url=f"{cached.url}/v1", api_key="x", max_retries=0) as aclient:
            async def one():
                raw = await aclient.chat.completions.with_raw_response.create(
                    model="demo", messages=[{"role": "user", "content": "Tell a long story about tides."}],
                    max_tokens=64, temperature=0, extra_body={"ignore_eos": True})
                return raw.headers.get("x-velollm-cache"), raw.parse().choices[0].message.content

            return await asyncio.gather(*(one() for _ in range(4)))

    tokens_before = cached.metric("velollm_tokens_total", model="demo", kind="generation")
    answers = asyncio.run(ask_all())
    assert sorted(label for label, _ in answers) == ["hit-exact", "hit-exact", "hit-exact", "miss"]
    assert len({text for _, text in answers}) == 1
    assert cached.metric("velollm_tokens_total", model="demo", kind="generation") == tokens_before + 64


def test_a_request_waiting_on_one_that_stores_nothing_generates_its_own_answer(cached):
    tokens_before = cached.metric("velollm_tokens_total", model="demo", kind="generation")
    question = "Describe a lighthouse at night."
    (label_1, text_1), (label_2, text_2) = _two_at_once(  # the second waits for the first, which stores nothing
        cached, "No store.", (question, question), ({"cache": {"no-store": True}}, {}))
    assert label_1 == "miss" and label_2 == "miss" and text_1 == text_2
    assert cached.metric("velollm_tokens_total", model="demo", kind="generation") == tokens_before + 128


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/generate"])
def test_hostile_bodies_pass_the_cache_to_a_400(cached, path):
    """The cache reads bodies with the server's JSON reader: NaN or deep nesting was a 500 in front of the
    endpoint; now the endpoint answers its 400 in its wire format (issue 12)."""
    for raw, field in (('{"model": "demo", "messages": [], "prompt": "x", "temperature": NaN}', "temperature"),
                       ('{"model": "demo", "x": ' + "[" * 900 + "]" * 900 + "}", "x")):
        r = httpx.post(cached.url + path, content=raw, headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code == 400 and r.headers["x-velollm-cache"] == "bypass", r.text
        error = r.json()["error"]
        assert field in (error["param"] if isinstance(error, dict) else error), error


def _two_at_once(server: ServerHandle, system: str, questions: tuple[str, str], extras: tuple[dict, dict]) -> list:
    """Asks the first question, then the second while the first is being generated."""
    import asyncio

    async def ask_both() -> list:
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0) as aclient:
            async def one(question: str, extra: dict):
                raw = await aclient.chat.completions.with_raw_response.create(
                    model="demo", messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
                    max_tokens=64, temperature=0, extra_body={"ignore_eos": True, **extra})
                return raw.headers.get("x-velollm-cache"), raw.parse().choices[0].message.content

            misses = server.metric("velollm_cache_misses_total")
            first = asyncio.create_task(one(questions[0], extras[0]))
            while await asyncio.to_thread(server.metric, "velollm_cache_misses_total") == misses:
                await asyncio.sleep(0.01)  # the first is in flight (looked up, generating) when the second arrives
            second = asyncio.create_task(one(questions[1], extras[1]))
            return [await first, await second]

    return asyncio.run(ask_both())


def test_a_paraphrase_of_a_question_in_flight_waits_for_its_answer(cached):
    tokens_before = cached.metric("velollm_tokens_total", model="demo", kind="generation")
    hits_before = cached.metric("velollm_cache_hits_total", kind="semantic")
    (label_1, text_1), (label_2, text_2) = _two_at_once(
        cached, "In flight.", ("What is the capital of Australia?", "What's the capital city of Australia?"), ({}, {}))
    assert (label_1, label_2) == ("miss", "hit-semantic") and text_1 == text_2
    assert cached.metric("velollm_tokens_total", model="demo", kind="generation") == tokens_before + 64
    assert cached.metric("velollm_cache_hits_total", kind="semantic") == hits_before + 1
    (label_1, _), (label_2, _) = _two_at_once(  # a near-miss in flight is not followed
        cached, "In flight.", ("What is the capital of Norway?", "What is the capital of Sweden?"), ({}, {}))
    assert (label_1, label_2) == ("miss", "miss")


def test_a_paraphrase_waiting_on_one_that_stores_nothing_generates_its_own_answer(cached):
    tokens_before = cached.metric("velollm_tokens_total", model="demo", kind="generation")
    (label_1, text_1), (label_2, text_2) = _two_at_once(
        cached, "Not stored.", ("How tall is Mount Everest?", "What is the height of Mount Everest?"),
        ({"cache": {"no-store": True}}, {}))
    assert (label_1, label_2) == ("miss", "miss")
    assert cached.metric("velollm_tokens_total", model="demo", kind="generation") == tokens_before + 128
