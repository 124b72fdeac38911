"""/api/generate's `context`: the prompt and the answer, as Ollama's (tokenize(prompt + response)), so without the
end-of-sequence token that ended the answer: a client continuing with it would put that token mid-prompt. The
answer's `logprobs` likewise: as Ollama's runner, none for the ending token or those a stop string took whole."""

from __future__ import annotations

import json

import httpx
import ollama
import pytest

from velollm.api.context_answer import answer_context_ids, answer_logprob_count
from velollm.api.generation import ChoiceState
from velollm.api.handler import Call
from velollm.api.ollama_format import OllamaFormatter

EOS, STOP = 2, 7


def _context(token_ids: list[int], finish_reason: str) -> list[int]:
    fmt = OllamaFormatter("m", False, Call("generate"), 0.0, [1, 10, 11], True, None, end_ids=frozenset({EOS, STOP}))
    choice = ChoiceState(0, token_ids=token_ids, finish_reason=finish_reason, t_first=0.0, t_last=0.0)
    return fmt.final(choice)["context"]


def test_the_token_that_ended_the_answer_is_left_out():
    assert _context([20, 21, EOS], "stop") == [1, 10, 11, 20, 21]
    assert _context([20, STOP], "stop") == [1, 10, 11, 20]  # a stop_token_ids token, as Ollama's text would lack it


def test_an_answer_cut_by_its_length_keeps_every_token():
    assert _context([20, 21, EOS], "length") == [1, 10, 11, 20, 21, EOS]  # EOS sampled mid-answer (ignore_eos)
    assert _context([20, 21], "stop") == [1, 10, 11, 20, 21]  # a stop string ended it: no end token to leave out


def _answer(qwen3, text: str, stop: str) -> tuple[list[int], list[int]]:
    """(ids generated until `stop` appeared in `text`, the context's answer ids for them)."""
    ids = qwen3.encode(text, add_special_tokens=False)
    n = next(k for k in range(1, len(ids) + 1) if stop in qwen3.decode(ids[:k]))
    choice = ChoiceState(0, token_ids=ids[:n], finish_reason="stop", stop_reason=stop)
    return ids[:n], answer_context_ids(choice, frozenset({EOS}), qwen3)


@pytest.mark.parametrize("text,stop,response", [
    ("The answer is 42.\n\nUser: and more", "\n\nUser:", "The answer is 42."),  # the stop is whole tokens
    ("Hello wonderful world", "onderful", "Hello w"),  # the stop begins inside " wonderful"
    ("Grüße aus Köln, bis bald", "ln,", "Grüße aus Kö"),  # ... inside a token after a multi-byte character
    ("日本語の文章です。次の文", "章で", "日本語の文"),  # characters split across byte-level tokens
])
def test_a_stop_strings_tokens_are_left_out(qwen3, text, stop, response):
    """Ollama's context is tokenize(prompt + response): the stop string, cut from the response, is not in it."""
    generated, answer = _answer(qwen3, text, stop)
    assert qwen3.decode(answer) == response and stop not in qwen3.decode(answer)
    # the generated ids whose text ends before the stop are kept (a continuation's prompt extends this one's)
    before = max(k for k in range(len(generated) + 1) if response.startswith(qwen3.decode(generated[:k])))
    assert before > 0 and answer[:before] == generated[:before]


def test_an_answer_stopped_by_a_string_its_text_does_not_hold_is_kept(qwen3):
    ids = qwen3.encode("no stop here", add_special_tokens=False)
    choice = ChoiceState(0, token_ids=ids, finish_reason="stop", stop_reason="zzz")
    assert answer_context_ids(choice, frozenset(), qwen3) == ids


def test_generate_context_through_the_server_lacks_the_stop_string(stub_server):
    """The stub generates one byte per token: the context is the prompt's ids and the response's bytes."""
    body = {"model": "demo", "prompt": "hi", "stream": False, "options": {"temperature": 0, "num_predict": 40}}
    whole = httpx.post(f"{stub_server.url}/api/generate", json=body, timeout=30).json()["response"]
    stop = whole[10:12]
    for stream in (False, True):
        r = httpx.post(f"{stub_server.url}/api/generate", timeout=30,
                       json={**body, "stream": stream, "options": {**body["options"], "stop": [stop]}})
        lines = [json.loads(line) for line in r.text.splitlines()]
        response, final = "".join(x.get("response", "") for x in lines), lines[-1]
        assert final["done_reason"] == "stop" and response == whole[: whole.index(stop)]
        answer = final["context"][-len(response.encode()):]
        assert answer == stub_server.engine.tokenizer.encode(response, add_special_tokens=False)
        assert len(final["context"]) == final["prompt_eval_count"] + len(response.encode())


@pytest.mark.parametrize("text,stop,response", [
    ("The answer is 42.\n\nUser: and more", "\n\nUser:", "The answer is 42."),
    ("Hello wonderful world", "onderful", "Hello w"),
    ("日本語の文章です。次の文", "章で", "日本語の文"),
])
def test_logprobs_keep_the_tokens_with_text_in_the_response(qwen3, text, stop, response):
    """Ollama's TruncateStop drops the pieces a stop string took whole (and their logprobs); a piece it cut in part
    stays. So the kept tokens are those whose text starts before the stop."""
    generated, _ = _answer(qwen3, text, stop)
    choice = ChoiceState(0, token_ids=generated, finish_reason="stop", stop_reason=stop)
    kept = answer_logprob_count(choice, frozenset({EOS}), qwen3)
    assert len(qwen3.decode(generated[: kept - 1])) < len(response) <= len(qwen3.decode(generated[:kept]))
    assert kept < len(generated) or stop == "onderful"
    eos = ChoiceState(0, token_ids=[*generated, EOS], finish_reason="stop")
    assert answer_logprob_count(eos, frozenset({EOS}), qwen3) == len(generated)  # no logprob for the EOS


@pytest.mark.parametrize("chat", [False, True])
def test_logprobs_end_with_the_response_whole_and_streamed(live_server, chat):
    """The logprobs of a stop string's tokens came with the answer (and, streamed, before the stop was known): two
    tokens' text used as the stop leaves the logprobs of the tokens before them, streamed alike (/api/generate and
    /api/chat through the ollama client)."""
    client = ollama.Client(host=live_server.url, timeout=60)

    def ask(stop: list[str], stream: bool = False):
        opts = {"num_predict": 40, "temperature": 0, "stop": stop}
        if chat:
            return client.chat(model="demo", messages=[{"role": "user", "content": "The keeper"}], logprobs=True,
                               options=opts, stream=stream)
        return client.generate(model="demo", prompt="The keeper", raw=True, logprobs=True, options=opts, stream=stream)

    def text(answer) -> str:
        return answer.message.content if chat else answer.response

    free = ask([])
    tokens = [lp.token for lp in free.logprobs]
    k = next(k for k in range(1, len(tokens) - 1) if all(t.isprintable() and "\ufffd" not in t and t.strip()
                                                       for t in tokens[k:k + 2])
             and text(free).find(tokens[k] + tokens[k + 1]) == len("".join(tokens[:k])))
    stop = tokens[k] + tokens[k + 1]
    whole = ask([stop])
    assert text(whole) == text(free)[: text(free).index(stop)] and whole.done_reason == "stop"
    assert [lp.token for lp in whole.logprobs] == tokens[:k]
    chunks = list(ask([stop], stream=True))
    assert [lp.token for c in chunks for lp in (c.logprobs or [])] == tokens[:k]
    assert "".join(text(c) for c in chunks) == text(whole)
