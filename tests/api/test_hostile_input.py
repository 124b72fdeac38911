"""Issue 12, items 8-10 (and 1, 7 at the edge): hostile input is a 400 naming the field, in the wire format
of the route, through the official clients against a real `velollm serve` on the demo model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.probed_health import ProbedHealth
from tests.serve_process import start_serve, stop_serve

MAX_QUEUE = 8
USER = [{"role": "user", "content": "hi"}]
POST_ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings", "/api/generate",
               "/api/chat", "/api/show", "/api/embed", "/api/embeddings", "/api/pull"]


def nested(levels: int, leaf: object = 1) -> object:
    for _ in range(levels):
        leaf = [leaf]
    return leaf


def nested_schema(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    proc, url, _, _ = start_serve(tmp_path_factory.mktemp("hostile"), "--model", "demo", "--no-upstream",
                                  "--max-model-len", "256", "--kv-cache-memory", "16MiB",
                                  "--max-queue", str(MAX_QUEUE))
    try:
        yield url
    finally:
        stop_serve(proc)


@pytest.fixture
def oai(url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture
def olm(url) -> ollama.Client:
    return ollama.Client(host=url, timeout=60)


def bad_openai(call, param: str, fragment: str = "") -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as err:
        call()
    body = err.value.body
    assert err.value.status_code == 400 and body["param"] == param, body
    assert fragment in body["message"], body
    return err.value


def bad_ollama(call, fragment: str) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        call()
    assert err.value.status_code == 400 and fragment in err.value.error, err.value.error


# --- item 8: nesting, stop_token_ids, seeds, surrogates: 400s, not 500s ------------------------------


@pytest.mark.parametrize("path", POST_ROUTES)
def test_body_nested_a_thousand_levels_is_a_400_on_every_route(url, path):
    for levels in (65, 1000, 100_000):
        raw = '{"model": "demo", "x": ' + "[" * levels + "]" * levels + "}"
        r = httpx.post(url + path, content=raw, headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code == 400, (levels, r.text)
        error = r.json()["error"]
        message = error["message"] if path.startswith("/v1/") else error
        assert "nested more than 64 levels" in message, message


def test_deep_schemas_in_tools_and_response_format(oai, olm, url):
    tool = {"type": "function", "function": {"name": "f", "parameters": nested_schema(300)}}
    r = _raw(url, "/v1/chat/completions", json.dumps({"model": "demo", "messages": USER, "tools": [tool]}))
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools", r.text
    deep = nested_schema(100)  # 200 objects deep: what the SDKs still encode
    bad_openai(lambda: oai.chat.completions.create(model="demo", messages=USER, response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": deep}}), "response_format", "nested")
    bad_openai(lambda: oai.chat.completions.create(model="demo", messages=USER, tools=[
        {"type": "function", "function": {"name": "f", "parameters": deep}}]), "tools", "nested")
    bad_ollama(lambda: olm.chat(model="demo", messages=USER, format=deep), "format is nested")


@pytest.mark.parametrize("ids", [["1"], [None], [[1]], [1.5], [-100000], [-1e20], [10**9]])
def test_stop_token_ids_that_are_no_token_ids(oai, ids):
    for create in (lambda: oai.chat.completions.create(model="demo", messages=USER, max_tokens=2,
                                                       extra_body={"stop_token_ids": ids, "min_tokens": 2}),
                   lambda: oai.completions.create(model="demo", prompt="x", max_tokens=2,
                                                  extra_body={"stop_token_ids": ids, "min_tokens": 2})):
        bad_openai(create, "stop_token_ids")


def test_one_bad_request_does_not_touch_a_running_one(oai):
    """Item 1 at the edge: the bad request never reaches the engine, the running stream finishes."""
    stream = oai.completions.create(model="demo", prompt="once", max_tokens=40, stream=True,
                                    extra_body={"ignore_eos": True})
    first = next(iter(stream))
    bad_openai(lambda: oai.completions.create(model="demo", prompt="x", max_tokens=2,
                                              extra_body={"stop_token_ids": [-100000], "min_tokens": 2}),
               "stop_token_ids")
    rest = list(stream)
    assert first.choices and rest[-1].choices[0].finish_reason == "length"


def test_logit_bias_outside_the_vocabulary(oai):
    bad_openai(lambda: oai.chat.completions.create(model="demo", messages=USER, max_tokens=2,
                                                   logit_bias={"99999999": 5}), "logit_bias", "outside the vocabulary")


@pytest.mark.parametrize("seed,fragment", [(2**64, "options.seed"), (2**70, "options.seed"),
                                           (-(2**63) - 1, "options.seed")])
def test_ollama_seed_beyond_64_bits(olm, seed, fragment):
    bad_ollama(lambda: olm.generate(model="demo", prompt="x", options={"seed": seed, "num_predict": 2}), fragment)


def test_ollama_seed_minus_one_is_random_as_in_ollama(olm):
    assert olm.generate(model="demo", prompt="x", options={"seed": -1, "num_predict": 2}).done


def test_lone_surrogates(url):
    """JSON escapes that decode to no character (the SDKs cannot even encode them; a JS client can)."""
    r = _raw(url, "/v1/completions", '{"model": "demo", "prompt": "a\\ud800b", "max_tokens": 2}')
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", r.text
    assert "lone surrogate" in r.json()["error"]["message"]
    r = _raw(url, "/v1/chat/completions", '{"model": "demo", "messages": [{"role": "user", "content": "\\udfff"}]}')
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].content", r.text
    r = _raw(url, "/api/generate", '{"model": "demo", "prompt": "\\ud800"}')
    assert r.status_code == 400 and "prompt holds a lone surrogate" in r.json()["error"], r.text
    r = _raw(url, "/api/generate", '{"model": "demo", "prompt": "\\ud83d\\ude00", "options": {"num_predict": 1}}')
    assert r.status_code == 200, r.text  # a surrogate pair is one character


def test_readable_file_that_is_no_model_names_the_path_only(olm, tmp_path):
    """Item 7 through the server: no bytes of the file in the answer."""
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$secret:19000:0:99999:7:::\n")
    with pytest.raises(ollama.ResponseError) as err:
        olm.generate(model=str(secret), prompt="x")
    assert err.value.status_code in (400, 404) and str(secret) in err.value.error, err.value.error
    assert "root" not in err.value.error.replace(str(secret), "")


@pytest.mark.parametrize("name", ["~0", "~nosuchuser/model", "~"])
def test_tilde_names_are_not_found_not_500(olm, oai, name):
    """Found by tests/fuzz: /api/show {"model": "~0"} was a 500 (Path.expanduser raises for an unknown user)."""
    for call in (lambda: olm.show(name), lambda: olm.generate(model=name, prompt="x"),
                 lambda: olm.embed(model=name, input="x")):
        with pytest.raises(ollama.ResponseError) as err:
            call()
        assert err.value.status_code in (400, 404), err.value
    with pytest.raises((openai.NotFoundError, openai.BadRequestError)):
        oai.chat.completions.create(model=name, messages=[{"role": "user", "content": "x"}], max_tokens=1)


# --- item 9: accepted nonsense ------------------------------------------------------------------


def _raw(url: str, path: str, text: str) -> httpx.Response:
    return httpx.post(url + path, content=text, headers={"content-type": "application/json"}, timeout=30)


@pytest.mark.parametrize("field", ["temperature", "top_p", "repetition_penalty", "frequency_penalty",
                                   "presence_penalty"])
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_openai_non_finite_numbers(url, field, value):
    r = _raw(url, "/v1/chat/completions", f'{{"model": "demo", "messages": {json.dumps(USER)}, "{field}": {value}}}')
    assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text


@pytest.mark.parametrize("field,value", [("temperature", 1e308), ("repetition_penalty", 1e308),
                                         ("temperature", math.inf)])
def test_openai_huge_numbers_through_the_sdk(oai, field, value):
    if math.isinf(value):  # the SDK's JSON encoder refuses inf itself: nothing reaches the server
        with pytest.raises(ValueError):
            oai.chat.completions.create(model="demo", messages=USER, extra_body={field: value})
        return
    bad_openai(lambda: oai.chat.completions.create(model="demo", messages=USER, extra_body={field: value}), field)


@pytest.mark.parametrize("text,fragment", [
    ('{"model": "demo", "prompt": "x", "options": {"temperature": NaN}}', "options.temperature"),
    ('{"model": "demo", "prompt": "x", "options": {"repeat_penalty": Infinity}}', "options.repeat_penalty"),
    ('{"model": "demo", "prompt": "x", "options": {"seed": 1e400}}', "options.seed"),
    ('{"model": "demo", "prompt": "x", "keep_alive": NaN}', "keep_alive"),
])
def test_ollama_non_finite_numbers(url, text, fragment):
    r = _raw(url, "/api/generate", text)
    assert r.status_code == 400 and fragment in r.json()["error"], r.text


def test_ollama_option_ranges_name_the_option(olm):
    bad_ollama(lambda: olm.generate(model="demo", prompt="x", options={"temperature": 1e308}), "options.temperature")
    bad_ollama(lambda: olm.generate(model="demo", prompt="x", options={"repeat_penalty": -1}), "options.repeat_penalty")


@pytest.mark.parametrize("template", ["{{ if .System }", "{{ .Prompt }", "{{ .Prompt }}{{", "{{ end }}"])
def test_unterminated_template(olm, template):
    bad_ollama(lambda: olm.generate(model="demo", prompt="x", template=template, options={"num_predict": 2}),
               "template")


@pytest.mark.parametrize("template, error", [
    ('{{ $x := "ab" }}' + '{{ range $.Messages }}{{ $x = printf "%s%s%s%s" $x $x $x $x }}' * 20 + "{{ end }}" * 20
     + "{{ .Prompt }}", "exceeds 64 MiB"),  # 20 nested quadruplings (within the 32 levels of nesting): 2 TB
    ('{{ printf "%9999999d" 1 }}' * 20 + "{{ .Prompt }}", "exceeds 64 MiB"),
    ("{{ if 1 }}" * 3000 + "{{ .Prompt }}" + "{{ end }}" * 3000, "nesting too deep"),
    # .Messages templates: Ollama's legacy last pass has no defines ("not defined" there)
    ('{{ define "r" }}{{ template "r" . }}{{ end }}{{ template "r" . }}{{ .Messages }}', "maximum template depth"),
    ("".join(f'{{{{ define "t{i}" }}}}{{{{ template "t{i + 1}" }}}}{{{{ template "t{i + 1}" }}}}{{{{ end }}}}'
             for i in range(40)) + '{{ define "t40" }}x{{ end }}{{ template "t0" }}{{ .Messages }}', "step limit"),
])
def test_template_that_would_eat_the_server(olm, template, error):
    """A template is code from the request: its output and nesting are bounded (a 400), the server serves on."""
    bad_ollama(lambda: olm.generate(model="demo", prompt="x", template=template, options={"num_predict": 2}), error)
    assert olm.generate(model="demo", prompt="x", options={"num_predict": 2}).done


def test_megabyte_template_parses_off_the_event_loop(url, tmp_path):
    """A template just under the 1 MiB cap takes about 1.5 s to parse: /health answers meanwhile (the parse is
    in a thread), the 400 is Go's parse error; one over the cap is refused at once with the cap named."""
    template = "{{ .Prompt }}" * 80_000 + "{{ end }}"
    r, _, slowest = _while_probing_health(url, tmp_path / "health.log", lambda: httpx.post(
        f"{url}/api/generate", json={"model": "demo", "prompt": "x", "template": template}, timeout=60))
    assert r.status_code == 400 and r.json() == {"error": "template: :1: unexpected {{end}}"}, r.text[:300]
    assert slowest < 1.0, slowest
    r = httpx.post(f"{url}/api/generate", json={"model": "demo", "prompt": "x", "template": "x" * (1 << 20) + "y"},
                   timeout=60)
    assert r.status_code == 400 and "over VeloLLM's cap of 1048576 (1 MiB" in r.json()["error"], r.text[:300]


# --- item 10: a request the queue can never hold is a 400 ----------------------------------------


def test_more_sequences_than_the_queue_holds_is_a_400(oai):
    error = bad_openai(lambda: oai.completions.create(model="demo", prompt=["a"] * 3, n=3, max_tokens=1), "n",
                       f"at most {MAX_QUEUE}")
    assert "retry-after" not in error.response.headers
    bad_openai(lambda: oai.completions.create(model="demo", prompt=["a"] * (MAX_QUEUE + 1), max_tokens=1), "prompt",
               "--max-queue")
    bad_openai(lambda: oai.chat.completions.create(model="demo", messages=USER, n=MAX_QUEUE + 1, max_tokens=1), "n",
               "--max-queue")
    # as many as the queue holds still run
    assert len(oai.completions.create(model="demo", prompt=["a"] * 4, n=2, max_tokens=1).choices) == MAX_QUEUE


# --- what the fuzz suite (tests/fuzz) found ---------------------------------------------------------


def test_responses_input_role_of_the_wrong_type(oai):
    bad_openai(lambda: oai.responses.create(model="demo", input=[{"role": [], "content": ""}]), "input[0].role")


# --- item 2 through the server: a huge prompt is refused without stopping /health ----------------


def _while_probing_health(url: str, log: Path, send) -> tuple[httpx.Response, float, float]:
    """send()'s answer, its seconds, and the slowest /health answer while it ran (every answer a 200). /health
    is timed by a process of its own (tests/probed_health.py): a thread here also timed this process's stalls,
    e.g. the encoding of a 10 MB body, which holds the GIL."""
    import time

    with ProbedHealth(url, log) as health:
        t0 = time.perf_counter()
        answer = send()
        elapsed = time.perf_counter() - t0
        answers = health.window()
    assert answers and all(outcome == "200" for _, outcome in answers), answers
    return answer, elapsed, max(seconds for seconds, _ in answers)


def test_ten_megabyte_prompt_is_refused_while_health_answers(url, tmp_path):
    r, elapsed, slowest = _while_probing_health(url, tmp_path / "health.log", lambda: httpx.post(
        f"{url}/v1/completions", json={"model": "demo", "prompt": "word " * 2_000_000, "max_tokens": 1}, timeout=60))
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.text
    assert elapsed < 5 and slowest < 1.0, (elapsed, slowest)


@pytest.mark.parametrize("path,body", [("/api/generate", {"prompt": "word " * 2_000_000}),
                                       ("/api/chat", {"messages": [{"role": "user", "content": "word " * 2_000_000}]})])
def test_ten_megabyte_prompt_on_api_is_cut_from_its_ends_cheaply(url, path, body):
    """On /api the same prompt is cut as Ollama cuts a prompt over num_ctx: only its ends are tokenized, so it
    costs no more than a refusal; `truncate: false` is still Ollama's 400."""
    import time

    t0 = time.perf_counter()
    r = httpx.post(f"{url}{path}", json={"model": "demo", "stream": False, "options": {"num_predict": 1}, **body},
                   timeout=60)
    assert r.status_code == 200 and r.json()["prompt_eval_count"] == 255, r.text[:300]
    assert "cut_tokens=4-" in r.headers["x-velollm-context"]
    assert time.perf_counter() - t0 < 5
    r = httpx.post(f"{url}{path}", json={"model": "demo", "stream": False, "truncate": False, **body}, timeout=60)
    assert r.status_code == 400 and r.json()["error"].startswith("the input length exceeds the context length")
