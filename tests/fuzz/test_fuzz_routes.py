"""Property-based fuzzing of every POST route, against a real `velollm serve` and through the proxy.

For any body (plausible, hostile, or no JSON at all): no 5xx, an answer in the route's wire format,
/health answering within a second all along, and the KV blocks back to zero afterwards.
"""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.checks import check_answer, wait_until_idle
from tests.fuzz.conftest import EXAMPLES, HEALTH_BOUND_S, FuzzTarget
from tests.fuzz.strategies import RAW_BODIES, ROUTES, encode

JSON = {"content-type": "application/json"}
_SETTINGS = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))


def _fuzz(target: FuzzTarget, path: str, examples: int) -> None:
    with httpx.Client(timeout=120) as client:
        @settings(max_examples=examples, **_SETTINGS)
        @given(ROUTES[path])
        def run(body: object) -> None:
            check_answer(path, client.post(f"{target.url}{path}", content=encode(body), headers=JSON))

        run()


def _healthy(target: FuzzTarget, native_url: str) -> None:
    health = target.health.window()  # the answers since the previous test's check
    assert not health.failures, health.failures[:5]
    assert health.slowest_s < HEALTH_BOUND_S, f"/health took {health.slowest_s:.2f}s"
    assert wait_until_idle(native_url) == 0, "KV blocks still allocated after every request ended"


@pytest.mark.parametrize("path", list(ROUTES))
def test_native_route(native, path):
    _fuzz(native, path, EXAMPLES)
    _healthy(native, native.url)


def test_native_raw_bodies(native):
    with httpx.Client(timeout=60) as client:
        @settings(max_examples=EXAMPLES, **_SETTINGS)
        @given(st.sampled_from(list(ROUTES)), RAW_BODIES, st.sampled_from(["application/json", "text/plain", None]))
        def run(path: str, raw: bytes, content_type: str | None) -> None:
            headers = {"content-type": content_type} if content_type else {}
            check_answer(path, client.post(f"{native.url}{path}", content=raw, headers=headers))

        run()
    _healthy(native, native.url)


@pytest.mark.parametrize("path", list(ROUTES))
def test_proxy_route(native, proxy, path):
    """The same bodies through `--proxy-only` (converted or passed through to the native server)."""
    _fuzz(proxy, path, max(10, EXAMPLES // 4))
    _healthy(proxy, native.url)


NOT_CONVERTED = ("/v1/responses/input_tokens", "/v1/responses/compact")  # 501s through an Ollama upstream


@pytest.mark.parametrize("path", [p for p in ROUTES if p.startswith("/v1/") and p not in NOT_CONVERTED])
def test_converting_proxy_route(native, converting_proxy, path):
    """The OpenAI bodies through a proxy that converts them for an Ollama upstream: `proxy` finds a VeloLLM by
    the kind probe and passes them through, so openai_via_ollama.py's reads were never fuzzed. (A count there is
    the 501 input_tokens_unavailable, a compaction compaction_unavailable: Ollama has no such routes, and applies
    the chat template itself.)"""
    _fuzz(converting_proxy, path, max(10, EXAMPLES // 4))
    _healthy(converting_proxy, native.url)
