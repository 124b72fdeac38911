"""SIGTERM drains `velollm serve`: new requests 503 and /health "draining", running requests finish up to
--shutdown-timeout, the rest end with an error in their wire format (SSE error event + [DONE], an
Ollama error line, a 503), their KV blocks freed; then the process exits."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.serve_process import start_serve, stop_serve

LONG = 100_000  # clamped to the context: runs until cut
GREEDY_LONG = {"num_predict": LONG, "temperature": 0}  # the demo model never ends a greedy answer early
FINISH = 500  # some seconds of work for the demo model: running at SIGTERM, done well before the timeout
GREEDY_FINISH = {"num_predict": FINISH, "temperature": 0}
CHAT = [{"role": "user", "content": "tell a long story"}]


class Client(threading.Thread):
    """One request in a thread: its status and every body line (streamed) or its JSON body."""

    def __init__(self, url: str, path: str, body: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.url, self.path, self.body = url, path, body
        self.status = 0
        self.lines: list[str] = []
        self.json: Any = None
        self.first = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=120) as c:
            if not self.body.get("stream"):
                self.first.set()
                r = c.post(f"{self.url}{self.path}", json=self.body)
                self.status, self.json = r.status_code, r.json()
                return
            with c.stream("POST", f"{self.url}{self.path}", json=self.body) as r:
                self.status = r.status_code
                for line in r.iter_lines():
                    if line:
                        self.lines.append(line)
                        self.first.set()


def _openai_events(lines: list[str]) -> list[Any]:
    return [line[6:] if line == "data: [DONE]" else json.loads(line[6:]) for line in lines if line.startswith("data: ")]


def _start(url: str, specs: list[tuple[str, dict[str, Any]]]) -> list[Client]:
    clients = [Client(url, path, body) for path, body in specs]
    for c in clients:
        c.start()
    for c in clients:
        assert c.first.wait(60), c.path
    deadline = time.monotonic() + 30
    while _num_requests(url) < len(clients):  # the non-streamed ones are in the engine too
        assert time.monotonic() < deadline, "the requests did not all start"
        time.sleep(0.05)
    return clients


def _num_requests(url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name in ("velollm_running_requests", "velollm_queue_size"))


def _sigterm_and_check_draining(proc: Any, url: str) -> None:
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    while True:  # the signal is handled on the server's next tick
        health = httpx.get(f"{url}/health", timeout=5)
        if health.status_code == 503 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert health.status_code == 503 and health.json()["status"] == "draining", health.text
    new = httpx.post(f"{url}/v1/completions", json={"model": "demo", "prompt": "hi"}, timeout=5)
    assert new.status_code == 503 and new.json()["error"]["code"] == "shutting_down"
    new = httpx.post(f"{url}/api/generate", json={"model": "demo", "prompt": "hi"}, timeout=5)
    assert new.status_code == 503 and "shutting down" in new.json()["error"]


def _background(url: str, max_output_tokens: int) -> str:
    """A background response (the demo model, greedy, to its max_output_tokens) seen running: its id."""
    created = httpx.post(f"{url}/v1/responses", json={"model": "demo", "input": "story", "background": True,
                                                      "max_output_tokens": max_output_tokens, "temperature": 0,
                                                      "ignore_eos": True}, timeout=30).json()
    deadline = time.monotonic() + 30
    while not httpx.get(f"{url}/v1/responses/{created['id']}", timeout=10).json()["output"]:
        assert time.monotonic() < deadline, "the background response did not start"
        time.sleep(0.05)
    return created["id"]


def _stored(tmp_path: Path, response_id: str) -> dict[str, Any]:
    """The response as the stopped server's store holds it (start_serve's VELOLLM_CACHE)."""
    from velollm.responses import ResponseStore

    store = ResponseStore(tmp_path / "cache" / "responses.sqlite")
    try:
        return store.get(response_id)
    finally:
        store.close()


def _serve(tmp_path: Path, timeout_s: float) -> tuple[Any, str, Path]:
    proc, url, log, _ = start_serve(tmp_path, "--max-model-len", "4096", "--shutdown-timeout", str(timeout_s))
    return proc, url, log


def _wait_exit(proc: Any, within_s: float) -> float:
    t0 = time.monotonic()
    try:
        proc.wait(timeout=within_s)
    except Exception:
        stop_serve(proc)
        raise
    return time.monotonic() - t0


def test_sigterm_cuts_long_requests_at_the_timeout_with_an_ending(tmp_path):
    proc, url, log = _serve(tmp_path, 2.0)
    try:
        clients = _start(url, [
            ("/v1/chat/completions", {"model": "demo", "messages": CHAT, "max_tokens": LONG, "stream": True,
                                      "ignore_eos": True}),
            ("/api/generate", {"model": "demo", "prompt": "story", "options": GREEDY_LONG,
                               "stream": True}),
            ("/v1/completions", {"model": "demo", "prompt": "story", "max_tokens": LONG, "ignore_eos": True}),
            ("/api/chat", {"model": "demo", "messages": CHAT, "options": GREEDY_LONG, "stream": False}),
        ])
        background = _background(url, LONG)
        _sigterm_and_check_draining(proc, url)
        assert _wait_exit(proc, 30) < 25
        for c in clients:
            c.join(10)
        sse, ndjson, completion, chat = clients
        events = _openai_events(sse.lines)
        assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "shutting_down", sse.lines[-3:]
        assert all("choices" in e for e in events[:-2])
        assert "shutting down" in json.loads(ndjson.lines[-1])["error"]
        assert all("response" in json.loads(line) for line in ndjson.lines[:-1])
        assert completion.status == 503 and completion.json["error"]["code"] == "shutting_down"
        assert chat.status == 503 and "shutting down" in chat.json["error"]
        text = log.read_text()
        assert "cutting 4 request(s)" in text and "drained: demo holds 0 KV blocks" in text, text[-3000:]
        assert "Application shutdown complete" in text
        cut = _stored(tmp_path, background)  # failed at the timeout, with what it said (not in_progress for ever)
        assert cut["status"] == "failed" and cut["error"]["code"] == "server_error" and cut["output"]
    finally:
        stop_serve(proc)


def test_sigterm_lets_running_requests_finish(tmp_path):
    proc, url, log = _serve(tmp_path, 60.0)
    try:
        clients = _start(url, [
            ("/v1/chat/completions", {"model": "demo", "messages": CHAT, "max_tokens": FINISH, "stream": True,
                                      "ignore_eos": True}),
            ("/api/generate", {"model": "demo", "prompt": "story", "options": GREEDY_FINISH,
                               "stream": True}),
            ("/api/generate", {"model": "demo", "prompt": "story", "options": GREEDY_FINISH,
                               "stream": False}),
        ])
        sse, ndjson, whole = clients
        background = _background(url, 2 * FINISH)  # on after the requests are done: the drain waits for it too
        streamed_before = len(sse.lines), len(ndjson.lines)
        _sigterm_and_check_draining(proc, url)
        assert _wait_exit(proc, 60) < 55  # once they are done, not at the timeout
        for c in clients:
            c.join(10)
        assert len(sse.lines) > streamed_before[0] and len(ndjson.lines) > streamed_before[1]  # ran on after SIGTERM
        events = _openai_events(sse.lines)
        assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "length", sse.lines[-2:]
        assert json.loads(ndjson.lines[-1])["done"] is True and json.loads(ndjson.lines[-1])["eval_count"] == FINISH
        assert whole.status == 200 and whole.json["eval_count"] == FINISH
        assert "cutting" not in log.read_text()
        finished = _stored(tmp_path, background)  # ran to its end, as the requests did
        assert finished["status"] == "incomplete" and finished["usage"]["output_tokens"] == 2 * FINISH
    finally:
        stop_serve(proc)
