"""Property-based fuzzing of Ollama's model-management routes (delete, copy, create, push, HEAD|POST blobs),
natively (on the temporary store, store.py) and through the proxy (relayed to the native server).

For any body or digest: no 5xx (push's 501 aside: VeloLLM pushes only through an Ollama upstream), an
answer in Ollama's wire format, nothing written or removed outside the store (its sentinels, the folders
around it, absolute paths), no stray file inside it, and /health answering within a second all along.
The store is put back as built after each example, so that deletes keep finding models.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from hypothesis import given, settings

from tests.fuzz.admin_strategies import admin_routes, blob_requests
from tests.fuzz.checks import check_admin_answer
from tests.fuzz.conftest import EXAMPLES, FuzzTarget, check_isolated
from tests.fuzz.store import FuzzStore
from tests.fuzz.strategies import encode
from tests.fuzz.test_fuzz_routes import _SETTINGS, JSON, _healthy

METHODS = {"/api/delete": "DELETE", "/api/copy": "POST", "/api/create": "POST", "/api/push": "POST"}
ROUTES = [*METHODS, "HEAD /api/blobs", "POST /api/blobs"]


def _fuzz(target: FuzzTarget, store: FuzzStore, route: str, examples: int, *others: FuzzStore) -> None:
    """`examples` requests to `route` on `target`; `store` (whose names the requests use) and `others` are
    checked and restored after each."""
    if route.endswith("/api/blobs"):
        method = route.split()[0]
        strategy = blob_requests(store).map(lambda r: (method, r.path, r.content if method == "POST" else b""))
    else:
        method = METHODS[route]
        strategy = admin_routes(store)[route].map(lambda b: (method, route, encode(b)))
    stores = (store, *others)
    before = [s.around() for s in stores]
    with httpx.Client(timeout=120) as client:
        @settings(max_examples=examples, **_SETTINGS)
        @given(strategy)
        def run(request: tuple[str, str, bytes]) -> None:
            method, path, content = request
            headers = JSON if path in METHODS else {"content-type": "application/octet-stream"}
            try:
                response = client.request(method, f"{target.url}{path}", content=content, headers=headers)
                check_admin_answer(path, method, response)
                for checked, snapshot in zip(stores, before):
                    checked.check_contained(snapshot, f"{method} {path} {content[:300]!r}")
            finally:
                for checked in stores:
                    checked.restore()

        run()


@pytest.mark.parametrize("route", ROUTES)
def test_native_admin_route(native, fuzz_store, route):
    _fuzz(native, fuzz_store, route, EXAMPLES)
    _healthy(native, native.url)


@pytest.mark.parametrize("route", ROUTES)
def test_proxy_admin_route(native, proxy, fuzz_store, route):
    """The same requests through `--proxy-only`, which relays them to the native server (its Ollama upstream)."""
    _fuzz(proxy, fuzz_store, route, max(10, EXAMPLES // 4))
    _healthy(proxy, native.url)



@pytest.mark.parametrize("models", ["", "~/.ollama/models", "{root}/.."])
def test_a_server_on_another_store_stops_the_session(fuzz_store, models):
    """The isolation check itself: a process whose $OLLAMA_MODELS is not the temporary store ends the run."""
    env = {"OLLAMA_MODELS": models.format(root=fuzz_store.root)} if models else {}
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=env)
    try:
        with pytest.raises(pytest.exit.Exception, match="refusing to fuzz model management"):
            check_isolated(proc.pid, fuzz_store)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("route", ROUTES)
def test_front_admin_route(native, front, fuzz_store, front_store, route):
    """Through a VeloLLM with its own store in front of the native one: upstream first, then its own store."""
    _fuzz(front, fuzz_store, route, max(10, EXAMPLES // 4), front_store)
    _healthy(front, native.url)


RACE = [("POST", "/api/copy", {"source": "tiny-a", "destination": "race"}),
        ("POST", "/api/copy", {"source": "race", "destination": "race-copy"}),
        ("DELETE", "/api/delete", {"model": "race"}), ("DELETE", "/api/delete", {"model": "race-copy"}),
        ("POST", "/api/create", {"model": "race", "from": "tiny-b", "system": "s", "stream": False}),
        ("POST", "/api/create", {"model": "ns/race:x", "from": "race", "stream": False}),
        ("DELETE", "/api/delete", {"model": "ns/race:x"}), ("GET", "/api/tags", None),
        ("POST", "/api/show", {"model": "race"})]


def test_native_admin_races(native, fuzz_store):
    """Copies, creates, deletes, listings and shows of the same names from 8 clients at once: each answers
    as it would alone (a model deleted under a copy is its 404, never a 500), and the store stays whole."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    before = fuzz_store.around()

    def client(seed: int) -> list[str]:
        rng, bad = random.Random(seed), []
        with httpx.Client(timeout=60) as http:
            for _ in range(EXAMPLES):
                method, path, body = rng.choice(RACE)
                response = http.request(method, f"{native.url}{path}", json=body)
                if response.status_code >= 500 or response.status_code not in (200, 400, 404):
                    bad.append(f"{method} {path} {body} -> {response.status_code}: {response.text[:1000]}")
        return bad

    with ThreadPoolExecutor(8) as pool:
        bad = [line for lines in pool.map(client, range(8)) for line in lines]
    assert not bad, bad[:5]
    fuzz_store.check_contained(before, "after the races")
    fuzz_store.restore()
    _healthy(native, native.url)
