"""Pure parts of the proxy: OLLAMA_HOST parsing, request/answer conversion, routing, torch-free imports."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from velollm.errors import InvalidRequest
from velollm.proxy import ollama_via_openai as o2o
from velollm.proxy import openai_via_ollama as o2l
from velollm.proxy.gateway import UpstreamGateway
from velollm.proxy.upstream import Upstream, UpstreamConfig, UpstreamUnavailable
from velollm.wire.ollama_host import parse_ollama_host


@pytest.mark.parametrize("value, url", [
    (None, "http://127.0.0.1:11434"),
    ("", "http://127.0.0.1:11434"),
    ("example.com", "http://example.com:11434"),
    ("example.com:56789", "http://example.com:56789"),
    (":56789", "http://127.0.0.1:56789"),
    ("0.0.0.0", "http://127.0.0.1:11434"),
    ("0.0.0.0:1234", "http://127.0.0.1:1234"),
    ("http://example.com", "http://example.com:80"),
    ("https://example.com", "https://example.com:443"),
    ("https://example.com:8443/ollama/", "https://example.com:8443/ollama"),
    ("[::1]:1337", "http://[::1]:1337"),
    ("'localhost:1'", "http://localhost:1"),
    ("example.com:notaport", "http://example.com:11434"),
])
def test_parse_ollama_host(value, url):
    assert parse_ollama_host(value) == url


def test_openai_request_to_ollama_chat():
    body = {"model": "m", "temperature": 0.2, "max_completion_tokens": 9, "stop": ["a"], "top_k": 5,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            "reasoning_effort": "xhigh", "tool_choice": "none", "tools": [{"type": "function"}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "look"},
                                                      {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]},
                         {"role": "assistant", "content": None, "reasoning_content": "hmm"}]}
    out = o2l.chat_request(body)
    assert out["options"] == {"temperature": 0.2, "top_p": 1.0, "num_predict": 9, "stop": ["a"], "top_k": 5}
    assert out["format"] == {"type": "object"} and out["think"] == "max" and "tools" not in out
    assert out["messages"] == [{"role": "user", "content": "look", "images": ["iVBO"]},
                               {"role": "assistant", "content": "", "thinking": "hmm"}]
    assert out["stream"] is False
    for bad in ({"messages": []}, {"messages": [{"role": "user", "content": "x"}], "n": 2},
                {"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{"}}]}]},
                {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}]}):
        with pytest.raises(InvalidRequest):
            o2l.chat_request({"model": "m", **bad})


@pytest.mark.parametrize("bad", [{"stop": 1.0}, {"stop": [1, "x"]}, {"stop": {"a": 1}}, {"reasoning": 1},
                                 {"reasoning": "high"},
                                 {"response_format": {"type": "json_schema", "json_schema": [1]}},
                                 {"stream_options": "x"}])
def test_openai_fields_of_the_wrong_type_are_invalid_requests_not_crashes(bad):
    """Found by tests/fuzz: {'prompt': '', 'stop': 1.0} through --proxy-only was a 500 (list(1.0))."""
    for convert, body in ((o2l.completion_request, {"prompt": ""}),
                          (o2l.chat_request, {"messages": [{"role": "user", "content": "x"}]})):
        with pytest.raises(InvalidRequest) as caught:
            convert({"model": "m", **body, **bad})
        assert caught.value.param in bad


def test_ollama_chat_stream_to_openai_events():
    stream = o2l.ChatStream("m", include_usage=True)
    events = stream.feed({"message": {"role": "assistant", "content": "", "thinking": "t"}, "done": False})
    events += stream.feed({"message": {"role": "assistant", "content": "Hi"}, "done": False})
    events += stream.feed({"message": {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "f", "arguments": {"a": 1}}}]}, "done": False})
    events += stream.feed({"message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
                           "prompt_eval_count": 3, "eval_count": 4})
    assert events[-1] == b"data: [DONE]\n\n"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "reasoning": "t", "reasoning_content": "t"}
    assert deltas[1] == {"content": "Hi"}
    call = deltas[2]["tool_calls"][0]
    assert call["function"] == {"name": "f", "arguments": "{\"a\": 1}"} and call["id"].startswith("call_")
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert len({c["id"] for c in chunks}) == 1


def test_ollama_request_to_openai():
    path, body = o2o.generate_request({"model": "m", "prompt": "hi", "system": "be brief", "images": ["R0lGODlh"],
                                       "format": "json", "options": {"num_predict": -1, "repeat_penalty": 1.1,
                                                                     "temperature": 0, "mirostat": 1}})
    assert path == "/v1/chat/completions" and body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": [
        {"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:image/gif;base64,R0lGODlh"}}]}]
    assert body["response_format"] == {"type": "json_object"} and body["temperature"] == 0
    assert body["repetition_penalty"] == 1.1 and "max_tokens" not in body and "mirostat" not in body
    path, body = o2o.generate_request({"model": "m", "prompt": "x", "raw": True, "stream": False,
                                       "options": {"num_predict": 3, "stop": ["\n"]}})
    assert path == "/v1/completions" and body == {"model": "m", "prompt": "x", "stream": False, "max_tokens": 3,
                                                  "stop": ["\n"]}
    chat = o2o.chat_request({"model": "m", "messages": [
        {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
        {"role": "tool", "tool_name": "f", "content": "ok"}]})
    call_id = chat["messages"][0]["tool_calls"][0]["id"]
    assert chat["messages"][0]["tool_calls"][0]["function"] == {"name": "f", "arguments": "{\"a\": 1}"}
    assert chat["messages"][1] == {"role": "tool", "content": "ok", "name": "f", "tool_call_id": call_id}


@pytest.mark.parametrize("tool_calls", ["x", [5], [{"function": "f"}]])
def test_openai_tool_calls_of_the_wrong_type_are_invalid_requests_not_crashes(tool_calls):
    """Found by probing /v1/chat/completions through an Ollama upstream: a 500 ('int' object has no attribute 'get')."""
    with pytest.raises(InvalidRequest, match="tool_calls must be an array of objects"):
        o2l.chat_request({"model": "m", "messages": [{"role": "assistant", "tool_calls": tool_calls}]})


@pytest.mark.parametrize("message", [{"role": "user", "content": "x", "images": "abc"},
                                     {"role": "user", "content": "x", "images": [5]},
                                     {"role": "user", "content": "x", "images": ["!!notbase64!!"]},
                                     {"role": "assistant", "content": "", "tool_calls": [5]},
                                     {"role": "assistant", "content": "", "tool_calls": "x"},
                                     {"role": "assistant", "content": "", "tool_calls": [{"function": [1]}]}])
def test_ollama_fields_of_the_wrong_type_are_invalid_requests_not_crashes(message):
    """Found by probing /api/chat and /api/generate through an OpenAI-compatible upstream: each was a 500
    (invalid base64, 'int' object has no attribute 'get'); Ollama answers them with a 400."""
    with pytest.raises(InvalidRequest):
        o2o.chat_request({"model": "m", "messages": [message]})
    if "images" in message:
        with pytest.raises(InvalidRequest):
            o2o.generate_request({"model": "m", "prompt": "x", "images": message["images"]})


def test_ollama_string_stop_is_refused_before_the_openai_upstream():
    """Ollama takes `options.stop` as an array only; the conversion refuses what Ollama would refuse."""
    with pytest.raises(InvalidRequest, match='option "stop" must be of type array') as caught:
        o2o.generate_request({"model": "m", "prompt": "x", "options": {"stop": "\n"}})
    assert caught.value.param == "options.stop"


@pytest.mark.parametrize(("num_predict", "max_tokens"), [(5, 5), (5.7, 5), (0, None), (-1, None), (-2, None)])
def test_ollama_num_predict_is_read_as_ollama_reads_it(num_predict, max_tokens):
    """Any JSON number, truncated (Ollama's options); 0 or negative: no max_tokens (no limit, as Ollama's runner
    and a native model read it; max_tokens 0 is a 400 on vLLM and VeloLLM)."""
    body = o2o.chat_request({"model": "m", "messages": [], "options": {"num_predict": num_predict}})
    assert body.get("max_tokens") == max_tokens


@pytest.mark.parametrize("num_predict", ["50", True, [3], {"n": 1}, 10**400], ids=lambda v: repr(v)[:12])
def test_ollama_num_predict_of_another_type_is_refused_not_dropped(num_predict):
    """Dropped, it left the upstream's answer unbounded (a string "50" gave hundreds of tokens)."""
    with pytest.raises(InvalidRequest, match='option "num_predict" must be of type integer') as caught:
        o2o.chat_request({"model": "m", "messages": [], "options": {"num_predict": num_predict}})
    assert caught.value.param == "options.num_predict"


@pytest.mark.parametrize("option, kind", [("temperature", "float32"), ("top_k", "integer")])
def test_ollama_option_past_float64_is_ollamas_error(option, kind):
    """An integer no float64 holds (10**400), which Ollama's decoder refuses: math.isfinite of it raised
    OverflowError (a 500)."""
    with pytest.raises(InvalidRequest, match=f'option "{option}" must be of type {kind}') as caught:
        o2o.chat_request({"model": "m", "messages": [], "options": {option: -(10**400)}})
    assert caught.value.param == f"options.{option}"


def test_openai_stream_to_ollama_lines_assembles_tool_calls():
    answer = o2o.NdjsonAnswer("m", "chat")
    lines = answer.feed({"choices": [{"delta": {"role": "assistant", "content": "He"}}]})
    lines += answer.feed({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "get", "arguments": "{\"ci"}}]}}]})
    lines += answer.feed({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "ty\": \"X\"}"}}]},
                                       "finish_reason": "tool_calls"}]})
    lines += answer.feed({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}})
    final = answer.final()
    assert [x["message"]["content"] for x in lines] == ["He"] and lines[0]["done"] is False
    assert final["done"] is True and final["done_reason"] == "stop"
    assert final["message"]["tool_calls"] == [{"id": "call_1", "function": {"index": 0, "name": "get", "arguments": {"city": "X"}}}]
    assert (final["prompt_eval_count"], final["eval_count"]) == (5, 7)
    assert final["total_duration"] >= final["eval_duration"] >= 0 and isinstance(final["total_duration"], int)


def test_whole_openai_answer_durations_are_never_zero_and_use_the_upstreams_timings():
    """A whole answer has no first token the proxy saw: eval_duration was 0, and clients divide eval_count by it.
    llama.cpp's server times the prompt and the generation itself (`timings`, ms): those are used."""
    answer = {"choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 4, "completion_tokens": 2}}
    untimed = o2o.NdjsonAnswer("m", "chat").whole(answer)
    assert untimed["eval_count"] == 2 and untimed["eval_duration"] > 0
    assert untimed["eval_duration"] <= untimed["total_duration"] and "prompt_eval_duration" not in untimed
    timed = o2o.NdjsonAnswer("m", "generate").whole({**answer, "timings": {"prompt_n": 4, "prompt_ms": 1.5,
                                                                          "predicted_n": 2, "predicted_ms": 20.25}})
    assert (timed["prompt_eval_duration"], timed["eval_duration"]) == (1_500_000, 20_250_000)
    streamed = o2o.NdjsonAnswer("m", "chat")
    streamed.feed({"choices": [{"delta": {"content": "hi"}, "finish_reason": "stop"}],
                   "timings": {"prompt_ms": 3.0, "predicted_ms": 7.0}})
    assert (streamed.final()["prompt_eval_duration"], streamed.final()["eval_duration"]) == (3_000_000, 7_000_000)
    huge = o2o.NdjsonAnswer("m", "chat").whole({**answer, "timings": {"prompt_ms": 10**400, "predicted_ms": 1.0}})
    assert huge["eval_duration"] > 0  # the upstream's timings past float64 are not used (math.isfinite raised)


def _upstream(handler) -> Upstream:
    return Upstream(UpstreamConfig(url="http://up:1", kind="auto"), transport=httpx.MockTransport(handler))


async def test_kind_probe_and_cached_listing():
    calls = []
    state = {"down": False}

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if state["down"]:
            raise httpx.ConnectError("refused")
        if request.url.path == "/api/version":
            return httpx.Response(404, json={"detail": "Not Found"})
        return httpx.Response(200, json={"object": "list", "data": [{"id": "org/model.gguf", "object": "model"}]})

    upstream = _upstream(handler)
    listing = await upstream.list_models()
    assert upstream.known_kind == "openai" and listing.names == ["org/model.gguf"]
    assert listing.as_ollama_tags()[0]["model"] == "org/model.gguf"
    state["down"] = True
    assert (await upstream.list_models()) is listing  # an unreachable upstream keeps the last listing
    with pytest.raises(UpstreamUnavailable, match="http://up:1"):
        await upstream.send("POST", "/v1/chat/completions", json_body={})
    assert calls.count("/v1/chat/completions") == 2  # one retry of a connection failure
    await upstream.aclose()


async def test_failed_probe_is_not_cached():
    state = {"down": True}

    def handler(request: httpx.Request) -> httpx.Response:
        if state["down"]:
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json={"version": "0.12.0"})

    upstream = _upstream(handler)
    with pytest.raises(UpstreamUnavailable):
        await upstream.kind()
    state["down"] = False
    assert await upstream.kind() == "ollama"
    await upstream.aclose()


async def _gateway(handler, proxy_only: bool = False) -> UpstreamGateway:
    gateway = UpstreamGateway(UpstreamConfig(url="http://upstream"), proxy_only=proxy_only)
    await gateway.upstream.aclose()
    gateway.upstream = _upstream(handler)
    return gateway


async def test_gateway_finds_listed_names_in_the_upstreams_spelling():
    def ollama(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/version":
            return httpx.Response(200, json={"version": "0.12.0"})
        return httpx.Response(200, json={"models": [{"name": "qwen3:0.6b"}, {"name": "llama3.2:latest"}]})

    gateway = await _gateway(ollama)
    assert await gateway.find("LLAMA3.2") == "LLAMA3.2"  # Ollama matches names itself: sent as asked
    assert await gateway.find("nope") is None
    assert await gateway.find("qwen3:0.6b", "cannot run it natively: architecture qwen3moe") == "qwen3:0.6b"
    await gateway.aclose()
    only = await _gateway(ollama, proxy_only=True)
    assert await only.find("anything") == "anything"  # --proxy-only: the upstream answers every name
    await only.aclose()

    def openai_server(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "Tiny-Llama"}]})
        return httpx.Response(404, json={"detail": "Not Found"})

    gateway = await _gateway(openai_server)
    assert await gateway.find("tiny-llama:latest") == "Tiny-Llama"  # an OpenAI server knows only its own ids
    assert await gateway.find("other") is None
    await gateway.aclose()


def test_proxy_only_server_imports_no_torch():
    # --proxy-only: the API app with the gateway and no native engine must start without torch.
    code = ("import sys\n"
            "from velollm.api.app import create_app\n"
            "from velollm.api.server_config import ServerConfig\n"
            "from velollm.api.model_pool import ModelPool\n"
            "from velollm.proxy.gateway import UpstreamGateway\n"
            "from velollm.proxy.options import upstream_config\n"
            "from velollm.proxy.upstream import UpstreamConfig\n"
            "create_app(ServerConfig(), engines={}, upstream=UpstreamGateway(UpstreamConfig(), proxy_only=True))\n"
            "bad = [m for m in ('torch', 'transformers', 'triton') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_serve_options_read_ollama_host_at_the_edge():
    import argparse

    from velollm.proxy.options import add_upstream_arguments, upstream_config

    parser = argparse.ArgumentParser()
    add_upstream_arguments(parser)
    config = upstream_config(parser.parse_args([]), {"OLLAMA_HOST": "0.0.0.0:9999"})
    assert (config.url, config.kind, config.configured) == ("http://127.0.0.1:9999", "auto", True)
    assert not upstream_config(parser.parse_args([]), {}).configured  # the default address, nobody asked for it
    args = parser.parse_args(["--upstream", "http://gpu-box:8080/v1", "--upstream-kind", "openai", "--proxy-only"])
    config = upstream_config(args, {"OLLAMA_HOST": "ignored:1"})
    assert (config.url, config.kind) == ("http://gpu-box:8080", "openai") and args.proxy_only
    assert upstream_config(parser.parse_args(["--no-upstream"]), {}) is None


async def test_a_refused_json_schema_goes_again_as_json_object_and_other_errors_pass():
    """llama-cpp-python's refusal of response_format json_schema (a 500 naming both): sent again as json_object +
    schema, and so at once from then on; any other error comes back as it was."""
    from velollm.proxy.schema_format import schema_format, send_with_schema

    sent = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sent.append(body["response_format"]["type"])
        if body["messages"][0]["content"] == "boom":
            return httpx.Response(500, json={"error": {"message": "boom"}})
        if body["response_format"]["type"] == "json_schema":
            return httpx.Response(500, json={"error": {"message": "('body', 'response_format', 'type') Input should "
                                                                  "be 'text' or 'json_object', got 'json_schema'"}})
        assert body["response_format"] == {"type": "json_object", "schema": {"type": "object"}}
        return httpx.Response(200, json={"choices": []})

    upstream = _upstream(handler)
    body = {"model": "m", "messages": [{"role": "user", "content": "boom"}],
            "response_format": schema_format({"type": "object"})}
    failed = await send_with_schema(upstream, "/v1/chat/completions", body)
    assert failed.status_code == 500 and json.loads(await upstream.read_body(failed)) == {"error": {"message": "boom"}}
    assert sent == ["json_schema"] and not upstream.wants_json_object_schema
    body["messages"] = [{"role": "user", "content": "hi"}]
    for _ in range(2):
        assert (await send_with_schema(upstream, "/v1/chat/completions", body)).status_code == 200
    assert sent == ["json_schema", "json_schema", "json_object", "json_object"] and upstream.wants_json_object_schema
    await upstream.aclose()
