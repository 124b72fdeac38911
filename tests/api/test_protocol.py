"""Request parsing and validation, without a server."""

from __future__ import annotations

import argparse
import math

import pytest

from velollm.api.ollama_models import human_number
from velollm.api.ollama_template import render
from velollm.api.protocol_ollama import parse_chat_request as ollama_chat
from velollm.api.protocol_ollama import parse_generate_request, sampling_from_options
from velollm.api.protocol_openai import parse_chat_request, parse_completion_request
from velollm.api.server_config import ServerConfig
from velollm.commands import serve
from velollm.config import EngineConfig, KernelSwitches
from velollm.errors import ContextOverflow, InvalidRequest
from velollm.output_budget import fit_max_tokens
from velollm.request_fields import Fields
from velollm.wire.keep_alive import keep_alive_seconds

MSGS = [{"role": "user", "content": "hi"}]


def test_fields_name_the_param_and_reject_bools_as_ints():
    f = Fields({"n": True, "x": 1.5, "o": {"k": "v"}})
    with pytest.raises(InvalidRequest) as e:
        f.int("n")
    assert e.value.param == "n"
    with pytest.raises(InvalidRequest):
        f.int("x")
    assert Fields({"x": 1.9}).int("x", truncate=True) == 1
    with pytest.raises(InvalidRequest) as e:
        Fields(f.dict("o"), "options.").int("k")
    assert e.value.param == "options.k"


@pytest.mark.parametrize("value, why", [(10**400, "must be a finite number, got an integer beyond the float range"),
                                        (True, "must be a number, got bool"), ("5", "must be a number, got str")],
                         ids=["10**400", "true", "string"])
def test_a_logit_bias_value_is_read_as_a_number_field(value, why):
    """float() of an integer no float holds (10**400) raised OverflowError: a 500 on both routes."""
    for parse, body in ((parse_chat_request, {"messages": [{"role": "user", "content": "hi"}]}),
                        (parse_completion_request, {"prompt": "hi"})):
        with pytest.raises(InvalidRequest) as e:
            parse({"model": "m", **body, "logit_bias": {"12": -5, "7": value}})
        assert (str(e.value), e.value.param) == (f"logit_bias.7 {why}", "logit_bias.7")


def test_chat_request_fields_map_to_sampling_params():
    req = parse_chat_request({
        "model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                {"type": "text", "text": "b"}]}],
        "max_completion_tokens": 7, "max_tokens": 99, "temperature": 0.5, "top_p": 0.9, "n": 3, "stop": "x",
        "seed": 5, "presence_penalty": 0.1, "frequency_penalty": 0.2, "logit_bias": {"12": -5},
        "logprobs": True, "top_logprobs": 4, "top_k": 0, "min_p": 0.1, "repetition_penalty": 1.1,
        "min_tokens": 2, "ignore_eos": True, "user": "ignored", "stream": True,
        "stream_options": {"include_usage": True}, "response_format": {"type": "json_object"},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}], "tool_choice": "auto",
        "parallel_tool_calls": False,
    })
    p = req.params
    assert req.messages[0]["content"] == "a\nb"
    assert (p.max_tokens, p.temperature, p.top_p, p.n, p.stop, p.seed) == (7, 0.5, 0.9, 3, ["x"], 5)
    assert (p.logprobs, p.top_k, p.min_p, p.repetition_penalty, p.min_tokens, p.ignore_eos) == (4, -1, 0.1, 1.1, 2, True)
    assert p.logit_bias == {12: -5.0} and p.structured_output.kind == "json_object"
    assert req.stream.stream and req.stream.include_usage
    assert req.tool_config.tools[0]["function"]["name"] == "f" and req.tool_config.parallel_tool_calls is False


def test_assistant_tool_call_arguments_are_parsed_for_templates():
    req = parse_chat_request({"model": "m", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]},
        {"role": "tool", "content": "1", "tool_call_id": "c1"}]})
    call = req.messages[1]["tool_calls"][0]
    assert call["function"]["arguments"] == {"a": 1} and req.messages[1]["content"] == ""
    with pytest.raises(InvalidRequest) as e:
        parse_chat_request({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
            {"function": {"name": "f", "arguments": "{bad"}}]}]})
    assert e.value.param == "messages[0].tool_calls[0].function.arguments"


def test_completion_prompt_forms():
    assert parse_completion_request({"model": "m", "prompt": "a"}).prompts == ["a"]
    assert parse_completion_request({"model": "m", "prompt": ["a", "b"]}).prompts == ["a", "b"]
    assert parse_completion_request({"model": "m", "prompt": [1, 2]}).prompts == [[1, 2]]
    assert parse_completion_request({"model": "m", "prompt": [[1], [2, 3]]}).prompts == [[1], [2, 3]]
    assert parse_completion_request({"model": "m", "prompt": "a"}).params.max_tokens == 16
    for bad in ([], [[]], [1, "a"], 5, [True]):
        with pytest.raises(InvalidRequest):
            parse_completion_request({"model": "m", "prompt": bad})


def test_context_fitting():
    assert fit_max_tokens(10, None, 100) == 90
    assert fit_max_tokens(10, 1000, 100) == 90
    assert fit_max_tokens(10, 5, 100) == 5
    with pytest.raises(ContextOverflow):
        fit_max_tokens(100, 5, 100)


def test_keep_alive_like_ollama():
    assert keep_alive_seconds(None, default=None) is None
    assert keep_alive_seconds(30) == 30.0 and keep_alive_seconds(-1) == math.inf
    assert keep_alive_seconds("1h30m") == 5400.0 and keep_alive_seconds("300ms") == 0.3
    assert keep_alive_seconds("0") == 0.0 and keep_alive_seconds("-1m") == math.inf
    for bad in ("3600", "-1", "soon", True):
        with pytest.raises(InvalidRequest):
            keep_alive_seconds(bad)


def test_ollama_options_precedence_and_mapping():
    s = sampling_from_options({"temperature": 0.2, "num_predict": 9, "seed": 3, "repeat_last_n": 0,
                               "num_ctx": 128, "mirostat": 1, "bogus": 1}, {"top_k": 5, "temperature": 0.7},
                              None, None)
    p = s.params
    assert (p.temperature, p.max_tokens, p.seed, p.top_k, p.top_p) == (0.2, 9, 3, 5, 0.9)
    assert p.repetition_penalty == 1.0 and s.num_ctx == 128
    d = sampling_from_options({}, {}, None, None).params
    assert (d.temperature, d.top_k, d.max_tokens, d.seed, d.repetition_window) == (0.8, 40, None, None, 64)
    with pytest.raises(InvalidRequest) as e:
        sampling_from_options({"top_k": "many"}, {}, None, None)
    assert e.value.param == "options.top_k"


def test_ollama_requests():
    g = parse_generate_request({"model": "m", "prompt": "p", "format": "json", "keep_alive": "5m",
                                "context": [1, 2], "system": "s"})
    assert g.stream and g.format.kind == "json_object" and g.keep_alive_s == 300 and g.context == [1, 2]
    c = ollama_chat({"model": "m", "messages": [{"role": "User"}, {"role": "assistant", "content": "",
                     "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
                     {"role": "tool", "content": "r", "tool_name": "f"}], "tools": [], "stream": False})
    assert c.messages[0] == {"role": "user", "content": ""} and c.tools is None and not c.stream
    assert c.messages[1]["tool_calls"][0]["function"]["arguments"] == {"a": 1} and c.messages[2]["name"] == "f"


def test_ollama_shift_is_a_bool_defaulting_to_true():
    """`shift` (*bool in Ollama: null is the default)."""
    assert parse_generate_request({"model": "m", "prompt": "p"}).shift
    assert parse_generate_request({"model": "m", "prompt": "p", "shift": None}).shift
    assert not parse_generate_request({"model": "m", "prompt": "p", "shift": False}).shift
    assert not ollama_chat({"model": "m", "messages": [], "shift": False}).shift
    with pytest.raises(InvalidRequest, match="shift"):
        ollama_chat({"model": "m", "messages": [], "shift": "no"})


def test_generate_template_field_renders_like_ollama():
    t = "{{ if .System }}S:{{ .System }}\n{{ end }}U:{{ .Prompt }}\nA:{{ .Response }}</s>"
    sys_hi = [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
    assert render(t, sys_hi) == "S:sys\nU:hi\nA:"
    assert render(t, [{"role": "user", "content": "hi"}]) == "U:hi\nA:"
    p = [{"role": "user", "content": "p"}]
    # No .Response in the template: Ollama appends one, and the output stops there.
    assert render("{{- .Prompt -}}  \n{{ if .System }}x{{ else }}y{{ end }}", p) == "py"
    # The full language (the old subset refused these): .Messages templates render in one pass.
    assert render("{{ range .Messages }}<{{ .Role }}>{{ .Content }}{{ end }}", sys_hi) == "<system>sys<user>hi"
    assert render('{{ printf "%q" .Prompt }}', p) == '"p"'
    with pytest.raises(InvalidRequest, match="function \"nope\" not defined"):
        render("{{ nope .Prompt }}", p)


def test_generate_checks_raw_mode_first_and_caps_the_template():
    """Ollama's GenerateHandler answers the raw-mode 400 before anything about the template; a template over
    1 MiB is a 400 naming the cap, before any parse; one that does not parse is found where it renders."""
    from velollm.api.ollama_template import MAX_TEMPLATE_CHARS

    huge = "x" * (MAX_TEMPLATE_CHARS + 1)
    for template in ("{{ end }}", huge):
        with pytest.raises(InvalidRequest, match="raw mode does not support") as e:
            parse_generate_request({"model": "m", "prompt": "p", "raw": True, "template": template})
        assert e.value.param == "raw"
    with pytest.raises(InvalidRequest, match=f"{MAX_TEMPLATE_CHARS + 1} characters, over .* cap of "
                                             f"{MAX_TEMPLATE_CHARS} \\(1 MiB") as e:
        parse_generate_request({"model": "m", "prompt": "p", "template": huge})
    assert e.value.param == "template"
    assert parse_generate_request({"model": "m", "prompt": "p", "template": "{{ end }}"}).template == "{{ end }}"
    assert parse_generate_request({"model": "m", "prompt": "p", "template": huge[1:]}).template == huge[1:]


def test_generate_type_errors_come_before_the_raw_mode_error():
    """Ollama binds the JSON (each field's type) before GenerateHandler looks at raw mode: a request with a
    wrong-typed field and raw mode with a system prompt gets the type error."""
    faults = {"stream": "yes", "prompt": 5, "suffix": [], "images": "x.png", "options": [], "keep_alive": True,
              "think": "very", "logprobs": 1, "top_logprobs": "2", "shift": "no", "truncate": 0,
              "_debug_render_only": "y"}
    for key, value in faults.items():
        with pytest.raises(InvalidRequest) as e:
            parse_generate_request({"model": "m", "prompt": "p", "raw": True, "system": "s", key: value})
        assert e.value.param == key and "raw mode" not in str(e.value), key
    with pytest.raises(InvalidRequest, match="raw mode does not support"):  # a value Ollama checks later: raw first
        parse_generate_request({"model": "m", "prompt": "p", "raw": True, "system": "s", "format": "xml"})
    assert parse_generate_request({"model": "m", "prompt": "p", "truncate": False}).context_overflow == "error"


def test_human_number_like_ollama():
    assert human_number(8_030_261_248) == "8.0B" and human_number(361_821_696) == "361.82M"
    assert human_number(7_000_000_000) == "7B" and human_number(1500) == "2K" and human_number(12) == "12"


def test_server_config_validation():
    assert ServerConfig().served_names == ("demo",) and ServerConfig().is_loopback
    assert not ServerConfig(host="0.0.0.0").is_loopback
    # Client-named paths: by default only on loopback; the flag decides either way.
    assert ServerConfig().client_paths_allowed and not ServerConfig(host="0.0.0.0").client_paths_allowed
    assert ServerConfig(host="0.0.0.0", allow_client_paths=True).client_paths_allowed
    assert not ServerConfig(allow_client_paths=False).client_paths_allowed
    for bad in (dict(models=()), dict(port=70000), dict(max_request_bytes=0),
                dict(models=("a", "b"), served_model_names=("x",)), dict(models=("a", "a"))):
        with pytest.raises(ValueError):
            ServerConfig(**bad)
    for bad in (dict(max_queue=0), dict(dtype="int3"), dict(device="tpu"), dict(gpu_memory_utilization=0),
                dict(max_model_len=0), dict(max_num_batched_tokens=0), dict(kv_cache_memory=-1)):
        with pytest.raises(ValueError):
            EngineConfig(**bad)


def test_serve_flags_and_env_edge():
    parser = argparse.ArgumentParser()
    serve.add_parser(parser.add_subparsers())
    args = parser.parse_args(["serve", "--model", "a", "--model", "b", "--served-model-name", "x",
                              "--served-model-name", "y", "--max-queue", "3", "--kv-cache-memory", "64MiB",
                              "--cors-origins", "https://a.example"])
    config = serve.build_config(args, {"OLLAMA_HOST": "0.0.0.0:1234", "VELOLLM_API_KEY": "k",
                                       "OLLAMA_ORIGINS": "https://b.example"})
    assert config.models == ("a", "b") and config.served_names == ("x", "y") and config.engine.max_queue == 3
    assert config.engine.kv_cache_memory == 64 << 20 and config.api_key == "k"
    assert config.upstream == "http://127.0.0.1:1234"
    assert config.cors_origins == ("https://a.example", "https://b.example")
    defaults = serve.build_config(parser.parse_args(["serve"]), {})
    # the kernel switches are read from the environment it was given (none set: the defaults)
    assert defaults.models == ("demo",) and defaults.engine == EngineConfig(kernel_switches=KernelSwitches())
    assert defaults.upstream == "http://127.0.0.1:11434" and defaults.host == "127.0.0.1"


def test_connection_timeout_flags():
    parser = argparse.ArgumentParser()
    serve.add_parser(parser.add_subparsers())
    config = serve.build_config(parser.parse_args(["serve", "--header-timeout", "2.5", "--body-timeout", "7"]), {})
    assert config.header_timeout_s == 2.5 and config.body_timeout_s == 7.0
    defaults = serve.build_config(parser.parse_args(["serve"]), {})
    assert defaults.header_timeout_s == 30.0 and defaults.body_timeout_s == 60.0
    for flag in ("--header-timeout", "--body-timeout"):
        for bad in ("0", "-1", "nan"):
            with pytest.raises(ValueError, match="must be > 0 seconds"):
                serve.build_config(parser.parse_args(["serve", flag, bad]), {})


def test_request_cannot_bring_its_own_chat_template():
    for body in ({"chat_template": "{{ x }}"}, {"chat_template_kwargs": {"chat_template": "{{ x }}"}}):
        with pytest.raises(InvalidRequest) as e:
            parse_chat_request({"model": "m", "messages": MSGS, **body})
        assert e.value.param == "chat_template"
    assert parse_chat_request({"model": "m", "messages": MSGS,
                               "chat_template_kwargs": {"enable_thinking": False}}).chat_template_kwargs == {
        "enable_thinking": False}


def test_typed_errors_map_to_status():
    from velollm.errors import ModelNotFound, Overloaded, VeloLLMError
    from velollm.wire.errors import to_api_error

    class Unavailable(VeloLLMError):
        status_code = 502

    assert to_api_error(InvalidRequest("x", param="p")).status == 400
    assert to_api_error(ContextOverflow("x")).status == 400
    assert to_api_error(ModelNotFound("x")).status == 404
    err = to_api_error(Overloaded("x"))
    assert err.status == 503 and err.headers["Retry-After"]
    assert to_api_error(Unavailable("down")).status == 502
    assert to_api_error(RuntimeError("boom")).status == 500
