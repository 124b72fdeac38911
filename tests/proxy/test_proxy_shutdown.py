"""SIGTERM on a proxy (`--proxy-only`, a second VeloLLM as its Ollama upstream): proxied streams that outlive
--shutdown-timeout end with an error the official clients raise (not a silently cut body), and the
upstream aborts the requests (its KV blocks return to zero)."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import httpx
import ollama
import openai

from tests.serve_process import start_serve, stop_serve

LONG = 100_000


def _collect(fn: Any, out: dict[str, Any], started: threading.Event) -> None:
    chunks = 0
    try:
        for _ in fn():
            chunks += 1
            started.set()
        out["ended"] = "normally"
    except Exception as exc:  # what the client raised at the end
        out["error"] = exc
    out["chunks"] = chunks
    started.set()


def _blocks(url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "velollm_allocated_blocks")


def test_sigterm_ends_proxied_streams_with_an_error(tmp_path):
    (tmp_path / "up").mkdir()
    (tmp_path / "proxy").mkdir()
    up, up_url, _, _ = start_serve(tmp_path / "up", "--no-upstream", "--max-model-len", "4096")
    proxy = None
    try:
        proxy, url, log, _ = start_serve(tmp_path / "proxy", "--proxy-only", "--upstream", up_url,
                                         "--shutdown-timeout", "2")
        oai = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
        native = ollama.Client(host=url, timeout=60)
        messages = [{"role": "user", "content": "a long story"}]
        runs: list[tuple[dict[str, Any], threading.Event]] = []
        greedy = {"num_predict": LONG, "temperature": 0}  # the demo model never ends a greedy answer early
        for fn in (lambda: oai.chat.completions.create(model="demo", messages=messages, max_tokens=LONG,
                                                       temperature=0, stream=True),
                   lambda: native.generate(model="demo", prompt="story", options=greedy, stream=True)):
            out: dict[str, Any] = {}
            started = threading.Event()
            threading.Thread(target=_collect, args=(fn, out, started), daemon=True).start()
            runs.append((out, started))
        for out, started in runs:
            assert started.wait(60) and "error" not in out, out
        time.sleep(0.3)
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any("chunks" not in out for out, _ in runs) and time.monotonic() < deadline:
            time.sleep(0.05)
        (oai_out, _), (ollama_out, _) = runs
        assert isinstance(oai_out.get("error"), openai.APIError) and "shutting down" in str(oai_out["error"]), oai_out
        assert isinstance(ollama_out.get("error"), ollama.ResponseError), ollama_out
        assert "shutting down" in str(ollama_out["error"]) and ollama_out["chunks"] > 0
        assert "cutting 2 request(s)" in log.read_text()
        deadline = time.monotonic() + 10
        while _blocks(up_url) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _blocks(up_url) == 0  # the upstream saw the proxy's connections close and aborted
    finally:
        if proxy is not None:
            stop_serve(proxy)
        stop_serve(up)
