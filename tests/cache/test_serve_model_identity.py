"""The response cache keys answers by the model's identity, not its name alone (velollm/api/model_identity.py):
a name that comes to point at another model (`ollama cp`, delete + create, files replaced behind VeloLLM's
back, an upstream's model replaced) misses, and answers with the new model; an unchanged model still hits.

Live servers on a temporary Ollama store of tiny GGUF models (different weights per seed), the openai
client asking (its raw response carries x-velollm-cache), the ollama client managing models. Both stores
of the exact tier (SQLite; a real redis-server), the semantic tier (SQLite) beside them, and a second
VeloLLM whose Ollama upstream is the first (the key is then the digest the upstream lists)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.cache.redis_server import redis_server
from tests.gguf.test_ollama_store import make_store
from tests.serve_process import start_serve, stop_serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "proxy"))  # tests/proxy's helpers import by bare name
from gguf_fixture import write_tiny_llama_gguf

pytestmark = pytest.mark.slow

ENGINE = ("--max-model-len", "256", "--kv-cache-memory", "16MiB")
QUESTION = "Name three primary colors."
ASKED = "What is the capital of Australia?"
PARAPHRASE = "What's the capital city of Australia?"
MODELS = {"tiny-a": 0, "tiny-b": 1, "solo": 2, "x": 0, "y": 0, "z": 0}  # x, y, z start as tiny-a's weights


def _store(root: Path) -> Path:
    for name, seed in MODELS.items():
        gguf = write_tiny_llama_gguf(root / f"seed{seed}.gguf", seed=seed)
        make_store(root / "models", gguf, ("registry.ollama.ai", "library", name, "latest"))
    return root / "models"


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("identity-sqlite")
    store = _store(root)
    proc, url, _, _ = start_serve(root, "--no-upstream", "--semantic-cache", *ENGINE, env={"OLLAMA_MODELS": str(store)})
    try:
        yield url, store
    finally:
        stop_serve(proc)


def ask(url: str, model: str, question: str = QUESTION, **kw) -> tuple[str | None, str]:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=4, temperature=0, **kw)
    return raw.headers.get("x-velollm-cache"), raw.parse().choices[0].message.content or ""


def ask_until_hit(url: str, model: str, question: str = QUESTION, kind: str = "hit-exact",
                  timeout: float = 15.0, **kw) -> str:
    """The answer once it is served from the cache (entries are stored just after the answer is sent)."""
    deadline = time.monotonic() + timeout
    while True:
        label, answer = ask(url, model, question, **kw)
        if label == kind:
            return answer
        assert time.monotonic() < deadline, f"{model!r}: {question!r} never became a {kind} (last: {label})"
        time.sleep(0.2)


def purged(url: str) -> float:
    """velollm_cache_purged_total: entries deleted because their model's identity changed."""
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("velollm_cache_purged_total "):
            return float(line.split()[1])
    return 0.0


def wait_purged(url: str, num: float) -> None:
    deadline = time.monotonic() + 15  # the purge runs in the background, after the request that saw the change
    while (got := purged(url)) < num:
        assert time.monotonic() < deadline, f"{got} entries purged, expected {num}"
        time.sleep(0.1)
    time.sleep(0.3)
    assert purged(url) == num


def check_replacing(url: str) -> None:
    """Copy over a model, then delete it and create it from another: each time the same request misses and
    gets the new model's answer, its cached paraphrase is not taken; an unchanged model keeps hitting."""
    admin = ollama.Client(host=url, timeout=120)
    first = {m: ask(url, m)[1] for m in ("tiny-b", "solo")}  # what the replacements answer
    assert first["tiny-b"] != first["solo"]
    old = ask(url, "x")[1]
    assert ask_until_hit(url, "x") == old and old != first["tiny-b"]
    kept = ask(url, "tiny-a")[1]
    assert ask_until_hit(url, "tiny-a") == kept == old  # the same weights as x, its own entry
    ask(url, "x", ASKED)
    ask_until_hit(url, "x", PARAPHRASE, kind="hit-semantic")

    assert admin.copy("tiny-b", "x").status == "success"
    wait_purged(url, 2)  # x's two old entries (QUESTION, ASKED) deleted as it is copied over; tiny-a's stay (below)
    assert ask(url, "x") == ("miss", first["tiny-b"])
    assert ask(url, "x", PARAPHRASE)[0] == "miss"  # the old model's entry for ASKED is not a match
    assert ask_until_hit(url, "x") == first["tiny-b"]
    assert ask(url, "tiny-a") == ("hit-exact", kept)

    assert admin.delete("x").status == "success"
    wait_purged(url, 4)  # x's entries of tiny-b (QUESTION, PARAPHRASE), as it is deleted
    assert admin.create(model="x", from_="solo").status == "success"
    assert ask(url, "x") == ("miss", first["solo"])
    assert ask_until_hit(url, "x") == first["solo"]
    assert ask(url, "tiny-a") == ("hit-exact", kept)


def test_a_replaced_model_misses_and_an_unchanged_one_hits(sqlite_server):
    check_replacing(sqlite_server[0])


def test_the_shared_redis_tier_too(tmp_path):
    store = _store(tmp_path)
    with redis_server(tmp_path) as redis_url:
        proc, url, _, _ = start_serve(tmp_path, "--no-upstream", "--semantic-cache", "--cache-url", redis_url, *ENGINE,
                                      env={"OLLAMA_MODELS": str(store)})
        try:
            check_replacing(url)
        finally:
            stop_serve(proc)


def test_files_replaced_behind_velollms_back(sqlite_server):
    """`ollama pull` by an Ollama sharing the store: the files change, VeloLLM is not told. A loaded model
    answers with the weights it loaded (and its entries stay good); once it is unloaded, the new files count."""
    url, store = sqlite_server
    old = ask(url, "y")[1]
    assert ask_until_hit(url, "y") == old
    ollama.Client(host=url, timeout=120).generate(model="y", keep_alive=0)  # `ollama stop y`
    deadline = time.monotonic() + 30
    while "y:latest" in [m.model for m in ollama.Client(host=url).ps().models]:
        assert time.monotonic() < deadline, "y was not unloaded"
        time.sleep(0.2)
    assert ask(url, "y") == ("hit-exact", old)  # the same files as the engine it loaded: the same identity
    replacement = ask(url, "tiny-b")[1]
    make_store(store, write_tiny_llama_gguf(store.parent / "seed1.gguf", seed=1),
               ("registry.ollama.ai", "library", "y", "latest"))
    time.sleep(2.5)  # model_identity.NATIVE_TTL_S: how long the files' old identity may be used
    assert ask(url, "y") == ("miss", replacement)


def test_an_upstream_model_is_keyed_by_its_listed_digest(sqlite_server, tmp_path):
    """A VeloLLM whose Ollama upstream is `sqlite_server`: copying over a model through it misses at once (the
    listing is fetched again); a model replaced on the upstream directly misses once the listing is refreshed."""
    upstream = sqlite_server[0]
    proc, url, _, _ = start_serve(tmp_path, "--upstream", upstream, "--cache", *ENGINE,
                                  env={"OLLAMA_MODELS": str(tmp_path / "own-store")})
    try:
        answers = {m: ask(url, m)[1] for m in ("tiny-b", "solo")}  # relayed as the requests for z are
        old = ask(url, "z")[1]
        assert ask_until_hit(url, "z") == old
        digest = {m["model"]: m["digest"] for m in httpx.get(f"{url}/api/tags").json()["models"]}["z:latest"]

        assert ollama.Client(host=url, timeout=120).copy("tiny-b", "z").status == "success"  # relayed
        assert ask(url, "z") == ("miss", answers["tiny-b"])
        assert ask_until_hit(url, "z") == answers["tiny-b"]

        assert ollama.Client(host=upstream, timeout=120).copy("solo", "z").status == "success"  # behind its back
        deadline = time.monotonic() + 30  # gateway.IDENTITY_LISTING_MAX_AGE_S, then one request to refresh it
        while (got := ask(url, "z"))[1] != answers["solo"]:
            assert got == ("hit-exact", answers["tiny-b"]) and time.monotonic() < deadline
            time.sleep(0.5)
        assert got[0] == "miss"
        tags = {m["model"]: m["digest"] for m in httpx.get(f"{url}/api/tags").json()["models"]}
        assert tags["z:latest"] != digest
    finally:
        stop_serve(proc)


@pytest.mark.parametrize("mode", ["--proxy-only", "--no-model-prefetch"])
def test_the_first_answer_of_an_upstream_model_is_found_by_the_second_request(sqlite_server, tmp_path, mode):
    """Before the upstream's first listing the digest is unknown: the first request waits (bounded) for that
    listing, so its answer is stored under the key the next request asks with (it was stored under the name
    alone, never found again, and an identical request beside it did not wait for it)."""
    proc, url, _, _ = start_serve(tmp_path, mode, "--upstream", sqlite_server[0], "--cache", *ENGINE,
                                  env={"OLLAMA_MODELS": str(tmp_path / "own-store")})
    try:
        state, first = ask(url, "solo", "A question asked first.")
        assert state == "miss"
        assert ask(url, "solo", "A question asked first.") == ("hit-exact", first)
    finally:
        stop_serve(proc)
