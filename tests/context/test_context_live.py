"""Context management and turn prefetch through the official openai and ollama clients against
`velollm serve` (demo model, 512-token context)."""

from __future__ import annotations

import json

import httpx
import ollama
import openai
import pytest

from tests.api.conftest import ServerHandle
from tests.serve_process import start_serve, stop_serve

CONTEXT = 512
SENTENCE = "The river ran quietly past the old mill where the miller counted sacks of grain. "


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("context")
    proc, url, log, _ = start_serve(tmp, "--kv-cache-memory", "32MiB", "--max-model-len", str(CONTEXT))
    try:
        yield ServerHandle("live", url, max_model_len=CONTEXT, log=log)
    finally:
        stop_serve(proc)


@pytest.fixture(scope="module")
def live_without_turn_prefill(tmp_path_factory):
    """The same server with --no-turn-prefill: the next turn's prefix, prefilled after an answer, would add its own
    prefix-cache hits, at a moment the test does not control, and blocks past what the engine computed."""
    tmp = tmp_path_factory.mktemp("context-no-turn-prefill")
    proc, url, log, _ = start_serve(tmp, "--kv-cache-memory", "32MiB", "--max-model-len", str(CONTEXT),
                                    "--no-turn-prefill")
    try:
        yield ServerHandle("live", url, max_model_len=CONTEXT, log=log)
    finally:
        stop_serve(proc)


def oai(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def long_chat(turns: int = 8) -> list[dict]:
    """A history of ~800 tokens: over the 512-token context."""
    messages = [{"role": "system", "content": "You are terse."}]
    for i in range(turns):
        messages += [{"role": "user", "content": f"Question {i}: " + SENTENCE * 2},
                     {"role": "assistant", "content": f"Answer {i}: " + SENTENCE}]
    return messages + [{"role": "user", "content": "And the last question?"}]


def kept_as_generated(server) -> dict[str, int]:
    """logit_bias for answers the chat template writes back as generated: printable ASCII without whitespace.
    The demo template trims each message's content (as Llama 3's does), and the stream leaves special tokens
    out, so an answer that starts or ends with whitespace (or holds a special token) comes back changed, and
    only the prompt before it is reused; which answers the random model gives depends on its float sums
    (core count, prefix-cache hits), so a test that needs the whole answer reused bans the rest."""
    from velollm.engine.loader.demo import ensure_demo
    from velollm.engine.text.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_folder(ensure_demo(server.log.parent / "cache"))  # the server's (start_serve)

    def kept(token_id: int) -> bool:
        text = tokenizer.decode([token_id], skip_special_tokens=False)
        return bool(text) and not tokenizer.is_special(token_id) and all(
            c.isascii() and c.isprintable() and not c.isspace() for c in text)

    return {str(i): -100 for i in range(tokenizer.vocab_size) if not kept(i)}


def parse_header(value: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in value.split("; "))


def indices(runs: str) -> list[int]:
    """`1-4,7` -> [1, 2, 3, 4, 7] (the header's message indices)."""
    out: list[int] = []
    for run in runs.split(","):
        first, _, last = run.partition("-")
        out += range(int(first), int(last or first) + 1)
    return out


def test_openai_default_is_context_length_exceeded(live):
    with pytest.raises(openai.BadRequestError) as info:
        oai(live).chat.completions.create(model="demo", messages=long_chat(), max_tokens=4)
    assert info.value.status_code == 400
    assert info.value.code == "context_length_exceeded" and info.value.param == "messages"
    assert f"maximum context length is {CONTEXT} tokens" in info.value.message
    assert oai(live).chat.completions.create(model="demo", messages=long_chat(1), max_tokens=2).choices  # serving


def test_openai_truncate_per_request_reports_what_it_dropped(live):
    before = live.metric("velollm_context_dropped_messages_total", model="demo")
    raw = oai(live).chat.completions.with_raw_response.create(
        model="demo", messages=long_chat(), max_tokens=8, temperature=0, extra_body={"context_overflow": "truncate"})
    r = raw.parse()
    report = parse_header(raw.headers["x-velollm-context"])
    dropped = indices(report["dropped_messages"])
    # Whole turns, oldest first: user + assistant pairs from index 1; never the system prompt or the last message.
    assert dropped == list(range(1, 1 + len(dropped))) and len(dropped) % 2 == 0
    original, kept = (int(n) for n in report["tokens"].split("->"))
    assert original > CONTEXT and kept == r.usage.prompt_tokens <= CONTEXT - 8
    assert live.metric("velollm_context_dropped_messages_total", model="demo") == before + len(dropped)
    assert live.metric("velollm_context_overflows_total", model="demo", mode="truncate") >= 1


def test_openai_bad_mode_is_a_400(live):
    with pytest.raises(openai.BadRequestError) as info:
        oai(live).chat.completions.create(model="demo", messages=long_chat(1), max_tokens=2,
                                          extra_body={"context_overflow": "shorten"})
    assert info.value.param == "context_overflow"


def test_truncation_never_splits_a_tool_call_from_its_result(live):
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Look it up. " + SENTENCE * 2},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": SENTENCE * 8},
                {"role": "assistant", "content": "Found it."}] + long_chat(6)[1:]
    raw = oai(live).chat.completions.with_raw_response.create(
        model="demo", messages=messages, max_tokens=8, extra_body={"context_overflow": "truncate"})
    dropped = indices(parse_header(raw.headers["x-velollm-context"])["dropped_messages"])
    assert {2, 3} <= set(dropped) or not {2, 3} & set(dropped)
    assert dropped[:4] == [1, 2, 3, 4]


class HeaderLog:
    """Response headers the ollama client's httpx transport saw."""

    def __init__(self) -> None:
        self.headers: list[httpx.Headers] = []

    def client(self, server) -> ollama.Client:
        return ollama.Client(host=server.url, timeout=120,
                             event_hooks={"response": [lambda response: self.headers.append(response.headers)]})


def test_a_long_session_reports_its_dropped_turns_in_a_short_header(live):
    """Each dropped index was listed: 3,000 dropped messages of an agent's session made a 14 KB header, which
    aiohttp (Open WebUI's client: 8,190 bytes a line) and nginx's default proxy buffer (4-8 KiB) refuse."""
    messages = [{"role": "system", "content": "You are terse."}]
    for i in range(1500):
        messages += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    messages.append({"role": "user", "content": "last"})
    log = HeaderLog()
    r = log.client(live).chat(model="demo", messages=messages, options={"num_predict": 2})
    assert r.done and r.prompt_eval_count <= CONTEXT
    header = log.headers[-1]["x-velollm-context"]
    dropped = indices(parse_header(header)["dropped_messages"])
    assert dropped == list(range(1, 1 + len(dropped))) and len(dropped) > 2500
    assert len(header) < 200, header


def test_ollama_default_truncates_keeping_system_and_last_message(live):
    log = HeaderLog()
    r = log.client(live).chat(model="demo", messages=long_chat(), options={"num_predict": 4, "temperature": 0})
    assert r.done and r.prompt_eval_count <= CONTEXT
    report = parse_header(log.headers[-1]["x-velollm-context"])
    assert report["mode"] == "truncate" and 0 not in indices(report["dropped_messages"])
    assert len(long_chat()) - 1 not in indices(report["dropped_messages"])


def test_ollama_num_ctx_lowers_the_budget(live):
    log = HeaderLog()
    r = log.client(live).chat(model="demo", messages=long_chat(2), options={"num_predict": 4, "num_ctx": 160})
    assert r.prompt_eval_count <= 160
    assert "dropped_messages" in parse_header(log.headers[-1]["x-velollm-context"])


OLLAMA_TOO_LONG = "the input length exceeds the context length"  # Ollama's runner, with truncate: false


def test_ollama_error_mode_and_truncate_false(live):
    with pytest.raises(ollama.ResponseError) as info:
        ollama.Client(host=live.url).chat(model="demo", messages=long_chat(),
                                          options={"num_predict": 4, "context_overflow": "error"})
    assert info.value.status_code == 400 and info.value.error.startswith(OLLAMA_TOO_LONG)
    assert "maximum context length" in info.value.error
    r = httpx.post(f"{live.url}/api/chat", json={"model": "demo", "messages": long_chat(), "stream": False,
                                                 "truncate": False}, timeout=60)
    assert r.status_code == 400 and r.json()["error"].startswith(OLLAMA_TOO_LONG)
    assert "maximum context length" in r.json()["error"]


def whole_prompt_ids(server, path: str, body: dict) -> list[int]:
    """The ids of the prompt `body` renders to, uncut (`_debug_render_only` with the model's context)."""
    from velollm.engine.loader.demo import ensure_demo
    from velollm.engine.text.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_folder(ensure_demo(server.log.parent / "cache"))
    r = httpx.post(f"{server.url}{path}", json={**body, "options": {}, "_debug_render_only": True}, timeout=60)
    text = r.json()["_debug_info"]["rendered_template"]
    return tokenizer.encode(text, add_special_tokens=False)


def rendered(server, path: str, body: dict) -> str:
    r = httpx.post(f"{server.url}{path}", json={**body, "_debug_render_only": True}, timeout=60)
    return r.json()["_debug_info"]["rendered_template"]


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_chat_last_message_over_num_ctx_is_cut_like_ollama(live, stream):
    """num_ctx smaller than the last message: not a 400 (Ollama's runner cuts the prompt's tokens). The turns
    go first, then the first num_keep ids and the tail stay, leaving the answer its reserve (here
    num_predict): prompt_eval_count is the cut prompt's length, reported in x-velollm-context and the
    context metrics."""
    from velollm.engine.loader.demo import ensure_demo
    from velollm.engine.text.tokenizer import Tokenizer

    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi. " + SENTENCE},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": SENTENCE * 6}]
    kept = [messages[0], messages[3]]
    whole = whole_prompt_ids(live, "/api/chat", {"model": "demo", "messages": kept})
    assert len(whole) > 100
    log = HeaderLog()
    cuts = live.metric("velollm_context_cut_prompts_total", model="demo")
    overflows = live.metric("velollm_context_overflows_total", model="demo", mode="truncate")
    options = {"num_ctx": 64, "num_predict": 8, "temperature": 0}
    r = log.client(live).chat(model="demo", messages=messages, options=options, stream=stream)
    if stream:
        r = list(r)[-1]
    assert r.done and r.done_reason in ("stop", "length") and r.prompt_eval_count == 64 - 8
    report = parse_header(log.headers[-1]["x-velollm-context"])
    assert report["mode"] == "truncate" and report["dropped_messages"] == "1-2"
    assert report["cut_tokens"] == f"4-{len(whole) - 52}" and report["tokens"].endswith("->56")
    assert live.metric("velollm_context_cut_prompts_total", model="demo") == cuts + 1
    assert live.metric("velollm_context_overflows_total", model="demo", mode="truncate") == overflows + 1
    tokenizer = Tokenizer.from_folder(ensure_demo(live.log.parent / "cache"))
    text = rendered(live, "/api/chat", {"model": "demo", "messages": messages, "options": options})
    assert text == tokenizer.decode(whole[:4] + whole[-52:], skip_special_tokens=False)


def test_ollama_num_keep_is_honoured(live):
    messages = [{"role": "user", "content": SENTENCE * 6}]
    whole = whole_prompt_ids(live, "/api/chat", {"model": "demo", "messages": messages})
    log = HeaderLog()
    client = log.client(live)
    # num_ctx 64, num_predict 8: the prompt is cut to 56; num_keep clamps to 55; negative: all it can
    for num_keep, keep in ((10, 10), (0, 0), (-1, 55), (1000, 55), (2.9, 2)):
        r = client.chat(model="demo", messages=messages,
                        options={"num_ctx": 64, "num_predict": 8, "num_keep": num_keep, "temperature": 0})
        assert r.prompt_eval_count == 56
        assert parse_header(log.headers[-1]["x-velollm-context"])["cut_tokens"] == f"{keep}-{len(whole) - 56 + keep}"
    # num_ctx below 4 is 4, as Ollama's scheduler makes it: 3 prompt ids (num_keep clamped to 2), 1 answer id
    r = client.chat(model="demo", messages=messages, options={"num_ctx": 1, "temperature": 0})
    assert r.prompt_eval_count == 3 and r.eval_count <= 1 and r.done_reason == "length"
    assert parse_header(log.headers[-1]["x-velollm-context"])["cut_tokens"] == f"2-{len(whole) - 1}"


def demo_tokenizer(server):
    """The server's tokenizer (start_serve's cache), without the server's length refusal."""
    from velollm.engine.loader.demo import ensure_demo
    from velollm.engine.text.tokenizer import Tokenizer

    return Tokenizer.from_folder(ensure_demo(server.log.parent / "cache"))


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_prompt_too_long_to_tokenize_is_cut_like_any_long_prompt(live, stream):
    """A prompt that the tokenizer refuses by its length alone (surely over the context: not read whole) is
    cut on /api as Ollama cuts any prompt over num_ctx: the first num_keep ids and the tail stay (only the
    text's ends are tokenized, so it stays cheap; the whole's size in the header is estimated). /v1 keeps
    OpenAI's context_length_exceeded, and `truncate: false` Ollama's 400."""
    huge = "Begin here. " + SENTENCE * 4000 + "The end."  # ~330k characters: over the tokenizer's limit
    with pytest.raises(openai.BadRequestError) as info:
        oai(live).completions.create(model="demo", prompt=huge, max_tokens=1)
    assert info.value.code == "context_length_exceeded"
    tokenizer = demo_tokenizer(live)
    system = {"role": "system", "content": "You are terse."}
    options = {"num_predict": 8, "temperature": 0, "num_keep": 6}
    cases = (("/api/chat", {"messages": [system, {"role": "user", "content": huge}]},
              tokenizer.encode_chat([system, {"role": "user", "content": huge}])),
             ("/api/generate", {"prompt": huge}, tokenizer.encode_chat([{"role": "user", "content": huge}])),
             ("/api/generate", {"prompt": huge, "raw": True}, tokenizer.encode(huge)))
    for path, body, whole in cases:
        assert len(huge) > CONTEXT * tokenizer.max_token_chars * 4  # refused by its length: never read whole
        r = httpx.post(f"{live.url}{path}", timeout=60, json={"model": "demo", "stream": stream, **body,
                                                              "options": options})
        assert r.status_code == 200, (path, r.text)
        final = [json.loads(line) for line in r.text.splitlines() if line][-1]
        assert final["done"] and final["prompt_eval_count"] == CONTEXT - 8, final
        report = parse_header(r.headers["x-velollm-context"])
        num_whole = int(report["tokens"].split("->")[0])
        assert abs(num_whole - len(whole)) < len(whole) // 50, (num_whole, len(whole))  # estimated
        assert report["tokens"].endswith(f"->{CONTEXT - 8}") and report["cut_tokens"] == f"6-{num_whole - 498}"
        ran = rendered(live, path, {"model": "demo", **body, "options": options})
        assert ran == tokenizer.decode(whole[:6] + whole[-498:], skip_special_tokens=False)
        r = httpx.post(f"{live.url}{path}", timeout=60, json={"model": "demo", "stream": stream, "truncate": False,
                                                              **body, "options": options})
        assert r.status_code == 400 and r.json()["error"].startswith(OLLAMA_TOO_LONG), r.text


def test_ollama_truncate_false_over_num_ctx_is_ollamas_400(live):
    """`truncate: false` (the ollama client has no argument for it: a raw request): Ollama's runner error,
    a 400 before any chunk, streamed or not; on /api/generate too."""
    for path, body in (("/api/chat", {"messages": [{"role": "user", "content": SENTENCE * 6}]}),
                       ("/api/generate", {"prompt": SENTENCE * 6}), ("/api/generate", {"prompt": SENTENCE * 6,
                                                                                        "raw": True})):
        for stream in (False, True):
            r = httpx.post(f"{live.url}{path}", json={"model": "demo", "stream": stream, "truncate": False,
                                                      "options": {"num_ctx": 64}, **body}, timeout=60)
            assert r.status_code == 400 and r.json()["error"].startswith(OLLAMA_TOO_LONG), (path, body, r.text)


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_truncate_false_prompt_of_exactly_num_ctx_runs_as_ollamas(live, stream):
    """Ollama refuses only a prompt longer than num_ctx (`len(inputs) > numCtx`): one of exactly num_ctx
    tokens runs. With the context full, Ollama's runner shifts it (the ids after num_keep, half of the rest,
    go: ShiftDiscard); VeloLLM shifts before the first token, so the answer has the room that leaves. Not a
    400, on both endpoints; x-velollm-context says which ids went."""
    cases = (("/api/chat", {"messages": [{"role": "user", "content": SENTENCE * 2}]}),
             ("/api/generate", {"prompt": SENTENCE * 2}), ("/api/generate", {"prompt": SENTENCE * 2, "raw": True}))
    for path, body in cases:
        num_ctx = len(whole_prompt_ids(live, path, {"model": "demo", **body}))
        for num_keep, keep in ((4, 4), (10, 10), (-1, num_ctx - 1)):
            discard = max((num_ctx - keep) // 2, 1)
            r = httpx.post(f"{live.url}{path}", timeout=60, json={
                "model": "demo", "stream": stream, "truncate": False, **body,
                "options": {"num_ctx": num_ctx, "num_keep": num_keep, "temperature": 0}})
            assert r.status_code == 200, (path, body, r.text)
            final = [json.loads(line) for line in r.text.splitlines() if line][-1]
            assert final["done"] and final["done_reason"] in ("stop", "length"), final
            assert final["prompt_eval_count"] == num_ctx - discard and final["eval_count"] >= 1, final
            assert final["prompt_eval_count"] + final["eval_count"] <= num_ctx
            report = parse_header(r.headers["x-velollm-context"])
            assert report["cut_tokens"] == f"{keep}-{keep + discard}", report
            assert report["tokens"] == f"{num_ctx}->{num_ctx - discard}", report
        # One token more is Ollama's 400.
        r = httpx.post(f"{live.url}{path}", timeout=60, json={
            "model": "demo", "stream": stream, "truncate": False, **body, "options": {"num_ctx": num_ctx - 1}})
        assert r.status_code == 400 and r.json()["error"].startswith(OLLAMA_TOO_LONG), r.text


SHIFT_CASES = (("/api/chat", {"messages": [{"role": "user", "content": SENTENCE * 2}]}),
               ("/api/generate", {"prompt": SENTENCE * 2}), ("/api/generate", {"prompt": SENTENCE * 2, "raw": True}))


def ollama_answer(path: str, r: httpx.Response) -> ollama.GenerateResponse | ollama.ChatResponse:
    """The final line of an Ollama answer, streamed or not, read by the ollama client's types (the client,
    0.6.3, has no `shift` argument: the requests are raw)."""
    assert r.status_code == 200, r.text
    final = [json.loads(line) for line in r.text.splitlines() if line][-1]
    return (ollama.ChatResponse if path == "/api/chat" else ollama.GenerateResponse).model_validate(final)


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_shift_false_ends_the_answer_when_the_context_is_full(live, stream):
    """`shift: false`: Ollama's runner ends the sequence with done_reason "length" when the next token has no
    place in the context (`!seq.shift` in runner.go): it holds `num_ctx` ids and samples one more, so a
    prompt of P ids gets `num_ctx - P + 1` tokens; one of exactly num_ctx runs as it is (not shifted, also
    with `truncate: false`) and gets one. The default (shift) keeps the room of the context only."""
    for path, body in SHIFT_CASES:
        size = len(whole_prompt_ids(live, path, {"model": "demo", **body}))
        for extra in ({}, {"truncate": False}):
            for num_ctx, want in ((size + 2, 3), (size, 1)):
                r = httpx.post(f"{live.url}{path}", timeout=60, json={
                    "model": "demo", "stream": stream, "shift": False, **extra, **body,
                    "options": {"num_ctx": num_ctx, "temperature": 0}})
                final = ollama_answer(path, r)
                assert (final.prompt_eval_count, final.eval_count, final.done_reason) == (size, want, "length"), \
                    (path, extra, num_ctx, final)
                assert "x-velollm-context" not in r.headers  # the prompt ran as sent
        # Shifting (the default, or `shift: true`): the answer has the context's room.
        for shift in ({}, {"shift": True}):
            r = httpx.post(f"{live.url}{path}", timeout=60, json={
                "model": "demo", "stream": stream, **shift, **body, "options": {"num_ctx": size + 2, "temperature": 0}})
            final = ollama_answer(path, r)
            assert (final.prompt_eval_count, final.eval_count, final.done_reason) == (size, 2, "length"), final
        # One id over num_ctx: Ollama's 400 with `truncate: false`, else cut to the whole context (no room kept).
        r = httpx.post(f"{live.url}{path}", timeout=60, json={
            "model": "demo", "stream": stream, "shift": False, "truncate": False, **body,
            "options": {"num_ctx": size - 1}})
        assert r.status_code == 400 and r.json()["error"].startswith(OLLAMA_TOO_LONG), r.text
        r = httpx.post(f"{live.url}{path}", timeout=60, json={
            "model": "demo", "stream": stream, "shift": False, **body,
            "options": {"num_ctx": size - 10, "num_keep": 4, "temperature": 0}})
        final = ollama_answer(path, r)
        assert (final.prompt_eval_count, final.eval_count, final.done_reason) == (size - 10, 1, "length"), final
        report = parse_header(r.headers["x-velollm-context"])
        assert report["tokens"] == f"{size}->{size - 10}" and report["cut_tokens"] == "4-14", report


def test_ollama_shift_false_chat_keeps_no_room_for_the_answer(live):
    """/api/chat drops the oldest turns only when the prompt is over `num_ctx` itself (Ollama's chatPrompt):
    the room VeloLLM keeps for the answer stands for the shift, so with `shift: false` a history that fits
    the context runs whole, where by default its oldest turns go."""
    messages = long_chat(3)
    size = len(whole_prompt_ids(live, "/api/chat", {"model": "demo", "messages": messages}))
    body = {"model": "demo", "stream": False, "messages": messages, "options": {"num_ctx": size + 3, "temperature": 0}}
    r = httpx.post(f"{live.url}/api/chat", timeout=60, json={**body, "shift": False})
    final = ollama_answer("/api/chat", r)
    assert (final.prompt_eval_count, final.eval_count, final.done_reason) == (size, 4, "length"), final
    assert "x-velollm-context" not in r.headers
    r = httpx.post(f"{live.url}/api/chat", timeout=60, json=body)
    final = ollama_answer("/api/chat", r)
    assert final.prompt_eval_count < size and parse_header(r.headers["x-velollm-context"])["dropped_messages"]


@pytest.mark.parametrize("raw", [False, True])
def test_ollama_generate_prompt_over_num_ctx_is_cut_like_ollama(live, raw):
    body = {"model": "demo", "prompt": SENTENCE * 6, "raw": raw}
    whole = whole_prompt_ids(live, "/api/generate", body)
    log = HeaderLog()
    r = log.client(live).generate(model="demo", prompt=SENTENCE * 6, raw=raw,
                                  options={"num_ctx": 64, "num_predict": 8, "num_keep": 5, "temperature": 0})
    assert r.done and r.prompt_eval_count == 56
    report = parse_header(log.headers[-1]["x-velollm-context"])
    assert report["cut_tokens"] == f"5-{len(whole) - 51}" and report["tokens"] == f"{len(whole)}->56"
    if not raw:  # with a `context`: all of it goes, then the new prompt is cut (one range over both)
        first = log.client(live).generate(model="demo", prompt="Hello.", options={"num_predict": 4})
        r = log.client(live).generate(model="demo", prompt=SENTENCE * 6, context=first.context,
                                      options={"num_ctx": 64, "num_predict": 8, "temperature": 0})
        report = parse_header(log.headers[-1]["x-velollm-context"])
        num_all = len(first.context) + len(whole) - 1  # the new prompt's ids follow the context without BOS
        assert r.prompt_eval_count == 56 and "dropped_tokens" not in report
        assert report["tokens"] == f"{num_all}->56" and report["cut_tokens"] == f"4-{num_all - 52}"
        assert r.context[: len(first.context)] == first.context  # the whole prompt and answer, as Ollama's
    # A long prompt within the context runs as it is (Ollama cuts only past the context), answer clamped.
    size = len(whole_prompt_ids(live, "/api/generate", {**body, "prompt": SENTENCE * 2}))
    r = log.client(live).generate(model="demo", prompt=SENTENCE * 2, raw=raw,
                                  options={"num_ctx": size + 2, "temperature": 0})
    assert r.prompt_eval_count == size and r.eval_count <= 2 and r.done_reason == "length"
    assert "x-velollm-context" not in log.headers[-1]


def test_a_conversation_cut_every_turn_runs_and_its_next_turn_is_whole(live):
    """Each turn's prompt is cut (the cut moves with the conversation, so the prefix cache misses after the
    kept head: no crash, no wrong reuse). A cut prompt is not remembered for the next turn (its ids are not
    its text's): the next turn, with room, renders the whole history."""
    client = ollama.Client(host=live.url, timeout=120)
    messages = [{"role": "system", "content": "You are terse."}]
    for turn in range(3):
        messages.append({"role": "user", "content": f"Turn {turn}. " + SENTENCE * 6})
        r = client.chat(model="demo", messages=messages, options={"num_ctx": 64, "num_predict": 8, "temperature": 0})
        assert r.done and r.prompt_eval_count == 56
        messages.append({"role": "assistant", "content": r.message.content})
    messages.append({"role": "user", "content": "Go on."})
    text = rendered(live, "/api/chat", {"model": "demo", "messages": messages, "options": {}})
    assert text.count((SENTENCE * 6).strip()) == 3  # the whole history: no cut ids reused for its text
    r = client.chat(model="demo", messages=messages, options={"num_predict": 4})
    assert r.done and r.prompt_eval_count == len(whole_prompt_ids(live, "/api/chat", {"model": "demo",
                                                                                      "messages": messages}))


def test_next_turn_prompt_reuses_the_whole_history_from_the_prefix_cache(live_without_turn_prefill):
    """Turn N+1's prompt starts with turn N's prompt ids and generated ids, token for token: the
    prefix cache hits everything the engine computed for turn N (all full blocks). Without turn prefill, which
    (since the demo template takes a system message anywhere) computes the next turn's header after each answer."""
    live = live_without_turn_prefill
    client = oai(live)
    bias = kept_as_generated(live)
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": SENTENCE}]
    for _ in range(3):
        r = client.chat.completions.create(model="demo", messages=messages, max_tokens=24, temperature=0,
                                           logit_bias=bias, extra_body={"ignore_eos": True})
        computed = r.usage.prompt_tokens + r.usage.completion_tokens - 1  # the last sampled token has no KV
        messages += [{"role": "assistant", "content": r.choices[0].message.content},
                     {"role": "user", "content": "Go on."}]
        hits = live.metric("velollm_prefix_cache_hits_total", model="demo")
        reused = live.metric("velollm_context_prefix_reused_tokens_total", model="demo")
        nxt = client.chat.completions.create(model="demo", messages=messages, max_tokens=1)
        assert live.metric("velollm_prefix_cache_hits_total", model="demo") - hits == computed // 16 * 16
        assert live.metric("velollm_context_prefix_reused_tokens_total", model="demo") - reused == computed + 1
        assert nxt.usage.prompt_tokens > computed + 1


def agent_chat(turns: int) -> list[dict]:
    """An agent loop re-sending the same tool output every turn."""
    output = "row 17: miller, 12 sacks, river mill, monday. " * 12
    messages = [{"role": "system", "content": "You are terse."}]
    for i in range(turns):
        call = {"id": f"call_{i}", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
        messages += [{"role": "user", "content": f"Step {i}: " + SENTENCE},
                     {"role": "assistant", "content": None, "tool_calls": [call]},
                     {"role": "tool", "tool_call_id": f"call_{i}", "content": output},
                     {"role": "assistant", "content": f"Done {i}."}]
    return messages + [{"role": "user", "content": "Summing up?"}]


def test_compress_dedupes_then_summarises_once_per_prefix(live):
    client = oai(live)
    raw = client.chat.completions.with_raw_response.create(
        model="demo", messages=agent_chat(2), max_tokens=4, extra_body={"context_overflow": "compress"})
    report = parse_header(raw.headers["x-velollm-context"])
    saved = dict(s.split(":") for s in report["saved"].split(","))
    assert int(saved["dedupe"]) > 100 and "summarized_messages" not in report  # lossless was enough
    assert live.metric("velollm_context_saved_tokens_total", model="demo", step="dedupe") >= int(saved["dedupe"])

    summaries = live.log.read_text().count("summarised")
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(
            model="demo", messages=agent_chat(6), max_tokens=4, extra_body={"context_overflow": "compress"})
        report = parse_header(raw.headers["x-velollm-context"])
        assert indices(report["summarized_messages"])[:4] == [1, 2, 3, 4] and "dropped_messages" not in report
        assert int(report["tokens"].split("->")[1]) == raw.parse().usage.prompt_tokens <= CONTEXT - 4
    assert live.log.read_text().count("summarised") == summaries + 1  # the second request reused the summary


@pytest.mark.parametrize("mode", ["truncate", "compress"])
def test_past_the_context_each_turn_extends_the_previous_prompt_and_answer(live, mode):
    """Past the context, turn N's plan (the turns dropped or summarised) is applied again to turn N+1
    while it fits: turn N+1's prompt starts with turn N's prompt ids and generated ids, token for token,
    and the prefix cache hits all of it."""
    client = oai(live)
    bias = kept_as_generated(live)
    messages = long_chat(5)
    reused_turns, computed = 0, None
    for turn in range(10):
        hits = live.metric("velollm_prefix_cache_hits_total", model="demo")
        reused = live.metric("velollm_context_prefix_reused_tokens_total", model="demo")
        raw = client.chat.completions.with_raw_response.create(
            model="demo", messages=messages, max_tokens=16, temperature=0, logit_bias=bias,
            extra_body={"ignore_eos": True, "context_overflow": mode})
        r = raw.parse()
        report = parse_header(raw.headers.get("x-velollm-context", "mode=none"))
        if "reuse:" in report.get("seconds", ""):
            assert live.metric("velollm_context_prefix_reused_tokens_total", model="demo") - reused == computed + 1
            assert live.metric("velollm_prefix_cache_hits_total", model="demo") - hits == computed // 16 * 16
            reused_turns += 1
        assert r.usage.prompt_tokens <= CONTEXT - 16
        computed = r.usage.prompt_tokens + r.usage.completion_tokens - 1  # the last sampled token has no KV
        messages += [{"role": "assistant", "content": r.choices[0].message.content},
                     {"role": "user", "content": f"Next {turn}."}]
    assert reused_turns >= 5


def test_ollama_generate_context_is_truncated_like_ollama_and_keeps_its_cut(live):
    """/api/generate with `context` past the context: the oldest context ids after num_keep go (reported),
    the returned context is the whole prompt and the answer (as Ollama's), and the next call cuts the same
    ids, so its prompt extends this one's and the prefix cache hits all of it."""
    log = HeaderLog()
    client = log.client(live)
    context, reports, kept, hits_all = [], [], None, 0
    for turn in range(18):
        hits = live.metric("velollm_prefix_cache_hits_total", model="demo")
        r = client.generate(model="demo", prompt=f"Part {turn}. " + SENTENCE, context=context,
                            options={"num_predict": 16, "temperature": 0})
        header = log.headers[-1].get("x-velollm-context")
        assert r.prompt_eval_count <= CONTEXT - 16
        assert r.context[: len(context)] == context and len(r.context) > len(context) + r.eval_count - 1
        if header is not None:
            report = parse_header(header)
            start, end = (int(n) for n in report["dropped_tokens"].split("-"))
            assert report["mode"] == "truncate" and start == 4 and end > start
            if reports and reports[-1] == (start, end):  # the same cut: all of the last prompt and answer hit
                assert live.metric("velollm_prefix_cache_hits_total", model="demo") - hits == kept // 16 * 16
                hits_all += 1
            reports.append((start, end))
        kept = r.prompt_eval_count + r.eval_count - 1
        context = r.context
    assert len(reports) >= 6 and hits_all >= 3
    r = httpx.post(f"{live.url}/api/generate", json={"model": "demo", "prompt": "x", "stream": False,
                                                     "context": context, "truncate": False}, timeout=60)
    assert r.status_code == 400 and "context length" in r.json()["error"]  # truncate: false: Ollama's error
    # A long prompt without context that is over the budget but within the context runs, its answer clamped.
    r = client.generate(model="demo", prompt=SENTENCE * 29, options={"temperature": 0})
    assert CONTEXT - 64 < r.prompt_eval_count < CONTEXT and r.done_reason == "length"
    assert "x-velollm-context" not in log.headers[-1]


def test_streamed_turn_is_remembered_before_done(live):
    """The turn is remembered as the answer ends, before [DONE]: a client that sends its next turn at once
    still gets the whole previous prompt and answer from the TurnCache."""
    client = oai(live)
    bias = kept_as_generated(live)
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Streamed. " + SENTENCE}]
    for _ in range(3):
        stream = client.chat.completions.create(model="demo", messages=messages, max_tokens=24, temperature=0,
                                                logit_bias=bias, stream=True, stream_options={"include_usage": True},
                                                extra_body={"ignore_eos": True})
        chunks = list(stream)
        usage = chunks[-1].usage
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "Go on."}]
        reused = live.metric("velollm_context_prefix_reused_tokens_total", model="demo")
        client.chat.completions.create(model="demo", messages=messages, max_tokens=1)
        computed = usage.prompt_tokens + usage.completion_tokens
        assert live.metric("velollm_context_prefix_reused_tokens_total", model="demo") - reused == computed
