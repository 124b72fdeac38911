"""Numbers past every range, through `velollm serve --proxy-only` to a second `velollm serve` on the demo model
that plays its Ollama upstream (`--upstream-kind ollama`: /v1 is converted to /api/chat and /api/generate)."""

from __future__ import annotations

import httpx
import pytest

from tests.serve_process import start_serve, stop_serve

JSON = {"content-type": "application/json"}
MESSAGES = '[{"role": "user", "content": "hi"}]'
BODIES = {"/v1/chat/completions": '{"model": "demo", "messages": ' + MESSAGES + ', %s}',
          "/v1/completions": '{"model": "demo", "prompt": "hi", %s}'}
HUGE = "1" + "0" * 400  # an integer past float64: Ollama's JSON cannot decode it


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """(proxy URL, upstream URL)."""
    up_proc, up_url, _, _ = start_serve(tmp_path_factory.mktemp("up"), "--model", "demo", "--max-model-len", "256",
                                        "--kv-cache-memory", "16MiB")
    try:
        proc, url, _, _ = start_serve(tmp_path_factory.mktemp("front"), "--proxy-only", "--upstream", up_url,
                                      "--upstream-kind", "ollama")
        try:
            yield url, up_url
        finally:
            stop_serve(proc)
    finally:
        stop_serve(up_proc)


def _upstream_generations(up_url: str) -> float:
    from tests.api.conftest import ServerHandle

    return sum(v for (name, labels), v in ServerHandle("live", up_url).metrics().items()
               if name == "velollm_requests_total" and {("endpoint", "/api/chat"), ("endpoint", "/api/generate")}
               & set(labels))


@pytest.mark.parametrize("path", list(BODIES))
@pytest.mark.parametrize("field, literal", [
    ("max_tokens", "1e400"), ("max_completion_tokens", "1e400"), ("max_tokens", "NaN"), ("max_tokens", "-Infinity"),
    ("temperature", HUGE), ("top_p", "Infinity"), ("seed", HUGE), ("max_tokens", "true")])
def test_a_number_no_reader_takes_is_a_400_naming_it(servers, path, field, literal):
    """1e400, NaN and Infinity are refused as the body is parsed (wire/json_body.py), before any reader (called on
    one, proxy/openai_numbers.max_tokens_field's int() raised OverflowError / ValueError); temperature and seed
    10**400 went upstream, whose 400 named options.temperature / options.seed (param null)."""
    url, up_url = servers
    before = _upstream_generations(up_url)
    response = httpx.post(f"{url}{path}", content=BODIES[path] % f'"{field}": {literal}', headers=JSON, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"{field} must be ")
    assert _upstream_generations(up_url) == before  # refused here, not upstream


@pytest.mark.parametrize("path", list(BODIES))
def test_a_limit_past_any_context_is_no_limit(servers, path):
    """max_tokens and top_k 10**400 are taken natively (whatever fits); upstream they are sent as 2**31 - 1."""
    url, up_url = servers
    before = _upstream_generations(up_url)
    fields = f'"max_tokens": {HUGE}, "top_k": {HUGE}, "temperature": 0'
    response = httpx.post(f"{url}{path}", content=BODIES[path] % fields, headers=JSON, timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] >= 1
    assert _upstream_generations(up_url) == before + 1
