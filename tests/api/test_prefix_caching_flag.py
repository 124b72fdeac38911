"""`velollm serve --no-enable-prefix-caching` (vLLM's spelling): a repeated prompt is computed in full (no cached
tokens in its usage, no prefix-cache hits in /metrics), while the default reuses the prefix's KV blocks."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.serve_process import start_serve, stop_serve

PROMPT = " ".join(f"word{i}" for i in range(80))  # several 16-token blocks


def _twice(url: str) -> tuple[object, object, float]:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    first = client.completions.create(model="demo", prompt=PROMPT, max_tokens=2, temperature=0)
    again = client.completions.create(model="demo", prompt=PROMPT, max_tokens=2, temperature=0)
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    [hits] = [line for line in metrics.splitlines() if line.startswith("velollm_prefix_cache_hits_total")]
    return first.usage, again.usage, float(hits.rsplit(" ", 1)[1])


@pytest.mark.parametrize("flags, caches", [((), True), (("--enable-prefix-caching",), True),
                                           (("--no-enable-prefix-caching",), False)])
def test_prefix_caching_flag(tmp_path, flags, caches):
    proc, url, _log, _ = start_serve(tmp_path, "--model", "demo", "--device", "cpu", "--no-upstream", *flags)
    try:
        first, again, hits = _twice(url)
    finally:
        stop_serve(proc)
    assert first.prompt_tokens == again.prompt_tokens > 32
    cached = again.prompt_tokens_details.cached_tokens if again.prompt_tokens_details else 0
    if caches:
        assert cached >= 32 and hits >= 32
    else:
        assert cached == 0 and hits == 0 and first.prompt_tokens_details is None
