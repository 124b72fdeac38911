"""A huge request body is parsed and checked off the event loop: while its JSON parse and its native rules run
(each held here until the test lets it go), another request is answered. On the loop, 200,000 chat messages
held every other request for about a second (the QA pass); a real server with a stub engine behind uvicorn."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

import velollm.api.ollama as ollama_routes
import velollm.api.openai as openai_routes
from tests.api.conftest import ThreadedServer, free_port, stub_app
from velollm.api.handler import OFF_LOOP_ITEMS
from velollm.wire import json_body

NUM_MESSAGES = 30_000  # 1.7 MB: over json_body.OFF_LOOP_BYTES and OFF_LOOP_ITEMS
WAIT_S = 20


class Gate:
    """Holds the big body's step (on whatever thread runs it) until the test has had its other answer."""

    def __init__(self) -> None:
        self.entered, self.opened = threading.Event(), threading.Event()

    def hold(self, body) -> None:
        if isinstance(body, dict) and len(body.get("messages") or ()) > OFF_LOOP_ITEMS:
            self.entered.set()
            self.opened.wait(WAIT_S)  # on the event loop this would stall the probe until it times out


@pytest.fixture
def gates(monkeypatch) -> dict[str, Gate]:
    gates = {"json": Gate(), "openai": Gate(), "ollama": Gate()}
    check_json, openai_parse, ollama_parse = (json_body.check_json, openai_routes.parse_chat_request,
                                              ollama_routes.parse_chat_request)

    def held_check(value, prefix=""):
        gates["json"].hold(value)
        return check_json(value, prefix)

    def held(gate, parse):
        def parse_held(body):
            gate.hold(body)
            return parse(body)
        return parse_held

    monkeypatch.setattr(json_body, "check_json", held_check)
    monkeypatch.setattr(openai_routes, "parse_chat_request", held(gates["openai"], openai_parse))
    monkeypatch.setattr(ollama_routes, "parse_chat_request", held(gates["ollama"], ollama_parse))
    return gates


@pytest.mark.parametrize("path,step", [("/v1/chat/completions", "openai"), ("/api/chat", "ollama")])
def test_other_requests_are_answered_while_a_huge_body_is_parsed_and_checked(gates, path, step):
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message number {i}"}
                for i in range(NUM_MESSAGES)]
    raw = json.dumps({"model": "demo", "messages": messages, "stream": False}).encode()
    assert len(raw) >= json_body.OFF_LOOP_BYTES
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with ThreadedServer(stub_app(port=port), port):
        answer = {}
        big = threading.Thread(target=lambda: answer.update(r=httpx.post(
            url + path, content=raw, headers={"content-type": "application/json"}, timeout=60)))
        big.start()
        try:
            for name in ("json", step):  # the parse, then the native rules
                assert gates[name].entered.wait(WAIT_S), f"the {name} step never ran"
                probe = httpx.get(f"{url}/api/version", timeout=WAIT_S / 4)  # answered meanwhile
                assert probe.status_code == 200 and not gates[name].opened.is_set()
                gates[name].opened.set()
        finally:
            for gate in gates.values():
                gate.opened.set()
            big.join(60)
    r = answer["r"]  # past the stub's 256-token context: OpenAI's route refuses it, Ollama's keeps the last turns
    if path.startswith("/v1"):
        assert r.status_code == 400 and "maximum context length" in r.json()["error"]["message"], r.text
    else:
        assert r.status_code == 200 and r.json()["done"] and r.json()["prompt_eval_count"] <= 256, r.text


def test_a_huge_bad_body_is_still_a_clear_400_in_the_routes_format():
    messages = [{"role": "user", "content": f"message number {i}"} for i in range(NUM_MESSAGES)]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with ThreadedServer(stub_app(port=port), port):
        nan = json.dumps({"model": "demo", "messages": [*messages, {"role": "user", "content": 1}],
                          "temperature": float("nan")}).encode()
        r = httpx.post(f"{url}/v1/chat/completions", content=nan, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["param"] == "temperature", r.text
        role = {"model": "demo", "messages": [*messages, {"role": "robot", "content": "hi"}], "stream": False}
        r = httpx.post(f"{url}/v1/chat/completions", json=role, timeout=60)
        assert r.status_code == 400 and "robot" in r.json()["error"]["message"], r.text
        content = {**role, "messages": [*messages, {"role": "user", "content": 5}]}  # Ollama takes any role
        r = httpx.post(f"{url}/api/chat", json=content, timeout=60)
        assert r.status_code == 400 and f"messages[{NUM_MESSAGES}].content" in r.json()["error"], r.text
