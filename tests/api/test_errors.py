"""Every error case returns its status in the client's wire format, and the next good request succeeds."""

from __future__ import annotations

import httpx
import openai
import pytest

V1_CHAT, V1_COMP = "/v1/chat/completions", "/v1/completions"
MSGS = [{"role": "user", "content": "hi"}]

# (path, body (dict or raw str), status, param named in the OpenAI error or a fragment of the Ollama one)
CASES = [
    (V1_CHAT, "{not json", 400, None),
    (V1_CHAT, {}, 400, "model"),
    (V1_CHAT, {"model": "demo"}, 400, "messages"),
    (V1_CHAT, {"model": "demo", "messages": "hi"}, 400, "messages"),
    (V1_CHAT, {"model": "demo", "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0].role"),
    (V1_CHAT, {"model": "demo", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
     "messages[0].content[0].type"),
    (V1_CHAT, {"model": "demo", "messages": MSGS, "temperature": "hot"}, 400, "temperature"),
    (V1_CHAT, {"model": "demo", "messages": MSGS, "top_p": 2}, 400, "top_p"),
    (V1_CHAT, {"model": "demo", "messages": MSGS, "n": 0}, 400, "n"),
    (V1_CHAT, {"model": "demo", "messages": MSGS, "max_tokens": 0}, 400, "max_tokens"),
    (V1_CHAT, {"model": "demo", "messages": MSGS, "top_logprobs": 2}, 400, "top_logprobs"),
    (V1_CHAT, {"model": "demo", "messages": MSGS, "stream_options": {"include_usage": True}}, 400, "stream_options"),
    (V1_CHAT, {"model": "demo", "messages": MSGS, "logit_bias": {"x": 1}}, 400, "logit_bias"),
    (V1_CHAT, {"model": "nope", "messages": MSGS}, 404, None),
    # Tool calling and structured output are supported; what is malformed is still a 400.
    (V1_CHAT, {"model": "demo", "messages": MSGS, "tool_choice": "required"}, 400, "tool_choice"),
    (V1_CHAT, {"model": "demo", "messages": MSGS, "tools": [{"type": "function", "function": {"name": "f"}}],
               "tool_choice": {"type": "function", "function": {"name": "g"}}}, 400, "tool_choice"),
    (V1_CHAT, {"model": "demo", "messages": MSGS, "tools": [{"type": "function", "function": {"name": "f"}}],
               "tool_choice": "sometimes"}, 400, "tool_choice"),
    (V1_CHAT, {"model": "demo", "messages": MSGS, "tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}}]}, 400, "tools"),
    (V1_CHAT, {"model": "demo", "messages": MSGS, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "properties": {"a": {"minimum": "zero"}}}}}}, 400,
     "response_format.json_schema.schema"),
    (V1_CHAT, {"model": "demo", "messages": MSGS, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x"}}}, 400, "response_format.json_schema.schema"),
    (V1_CHAT, {"model": "demo", "messages": MSGS, "response_format": {"type": "xml"}}, 400, "response_format.type"),
    (V1_CHAT, {"model": "demo", "messages": [{"role": "user", "content": "x " * 3000}]}, 400, "messages"),
    (V1_COMP, {"model": "demo"}, 400, "prompt"),
    (V1_COMP, {"model": "demo", "prompt": [1.5]}, 400, "prompt"),
    (V1_COMP, {"model": "demo", "prompt": [10**9]}, 400, "prompt"),
    (V1_COMP, {"model": "demo", "prompt": "x", "logprobs": 50}, 400, "logprobs"),
    (V1_COMP, {"model": "demo", "prompt": "x", "prompt_logprobs": -1}, 400, "prompt_logprobs"),
    (V1_COMP, {"model": "demo", "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),  # 0: only with echo
    (V1_COMP, {"model": "demo", "prompt": "x", "suffix": "y"}, 400, "suffix"),
    ("/api/generate", "{bad", 400, "invalid JSON"),
    ("/api/generate", {}, 400, "model is required"),
    ("/api/generate", {"model": "nope", "prompt": "x"}, 404, "model 'nope' not found"),
    ("/api/generate", {"model": "demo", "prompt": "x", "options": {"temperature": "hot"}}, 400, "options.temperature"),
    ("/api/generate", {"model": "demo", "prompt": "x", "raw": True, "system": "s"}, 400, "raw mode"),
    ("/api/generate", {"model": "demo", "prompt": "x", "format": {"type": "object", "required": "a"}}, 400,
     "not a valid JSON Schema"),
    ("/api/chat", {"model": "demo", "messages": MSGS, "format": {"type": 7}}, 400, "not a valid JSON Schema"),
    ("/api/generate", {"model": "demo", "prompt": "x", "format": "xml"}, 400, "invalid format"),
    ("/api/generate", {"model": "demo", "prompt": "x", "think": True}, 400, "does not support thinking"),
    ("/api/generate", {"model": "demo", "prompt": "x", "keep_alive": "3600"}, 400, "missing unit"),
    ("/api/generate", {"model": "demo", "prompt": "x", "images": ["aGk="]}, 400, "images"),
    ("/api/generate", {"model": "demo", "prompt": "x", "template": "{{ range .Messages }}"}, 400, "template"),
    # Past the context Ollama cuts the prompt by default (tests/context); `truncate: false` is its 400.
    ("/api/generate", {"model": "demo", "prompt": "x " * 3000, "stream": False, "truncate": False}, 400,
     "the input length exceeds the context length"),
    ("/api/chat", {"model": "demo", "messages": "hi"}, 400, "messages"),
    ("/api/show", {}, 400, "model is required"),
    ("/api/show", {"model": "nope"}, 404, "model 'nope' not found"),
]


def _post(server, path: str, body) -> httpx.Response:
    if isinstance(body, str):
        return httpx.post(server.url + path, content=body, headers={"content-type": "application/json"}, timeout=30)
    return httpx.post(server.url + path, json=body, timeout=30)


@pytest.mark.parametrize("path,body,status,detail", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_error_then_good_request(server, path, body, status, detail):
    r = _post(server, path, body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    if path.startswith("/v1"):
        assert set(err) == {"message", "type", "param", "code"} and err["message"]
        assert err["type"] == "invalid_request_error"
        if detail is not None:
            assert err["param"] == detail
        if status == 404:
            assert err["code"] == "model_not_found"
    else:
        assert isinstance(err, str) and detail in err
    good = _post(server, V1_CHAT if path.startswith("/v1") else "/api/generate",
                 {"model": "demo", "messages": MSGS, "max_tokens": 2} if path.startswith("/v1")
                 else {"model": "demo", "prompt": "hi", "stream": False, "options": {"num_predict": 2}})
    assert good.status_code == 200, good.text


def test_max_tokens_beyond_context_is_clamped(server):
    body = {"model": "demo", "prompt": "clamp", "max_tokens": 10**6, "temperature": 0, "ignore_eos": True}
    r = _post(server, V1_COMP, body)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] == server.max_model_len
    assert r.json()["choices"][0]["finish_reason"] == "length"


def test_unknown_routes_and_methods(server):
    r = httpx.get(f"{server.url}/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.get(f"{server.url}/api/nope")
    assert r.status_code == 404 and r.json() == {"error": "404 page not found"}
    r = httpx.post(f"{server.url}/v1/nope/deeper", json={"model": "demo"})
    assert r.status_code == 404 and r.json()["error"] == {"message": "Invalid URL (POST /v1/nope/deeper)",
                                                          "type": "invalid_request_error", "param": None,
                                                          "code": None}  # OpenAI's own answer
    r = httpx.delete(f"{server.url}/api/nope")
    assert r.status_code == 404 and r.json() == {"error": "404 page not found"}
    r = httpx.get(f"{server.url}/v1/completions")
    assert r.status_code == 405 and "not allowed" in r.json()["error"]["message"]
    r = httpx.get(f"{server.url}/api/chat")
    assert r.status_code == 405 and "not allowed" in r.json()["error"]
    # the openai SDK reads the 404 as its NotFoundError, with OpenAI's error object
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.get("/nope", cast_to=object)
    assert caught.value.body["type"] == "invalid_request_error" and caught.value.body["message"]


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PUT", "/v1/chat/completions/chatcmpl-x", {"GET", "HEAD", "POST", "DELETE"}),
    ("PUT", "/v1/chat/completions", {"GET", "HEAD", "POST"}),
    ("POST", "/v1/responses/resp_x", {"GET", "HEAD", "DELETE"}),
    ("GET", "/api/blobs/sha256:x", {"HEAD", "POST"}),
])
def test_405_allows_every_method_of_the_path(server, method, path, allow):
    """Routes that share a path (stored chat completions: list and create, retrieve / update / delete) answer
    a method none takes with a 405 whose Allow lists all of theirs (it listed the first route's only)."""
    r = httpx.request(method, f"{server.url}{path}")
    assert r.status_code == 405, r.text
    assert {m.strip() for m in r.headers["allow"].split(",")} == allow
    assert "not allowed" in (r.json()["error"]["message"] if path.startswith("/v1/") else r.json()["error"])


def test_root_version_health(server):
    assert httpx.get(f"{server.url}/").text == "Ollama is running"
    assert httpx.head(f"{server.url}/").status_code == 200
    assert httpx.get(f"{server.url}/api/version").json()["version"]
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
