"""vLLM's constrained-decoding keys (`structured_outputs`, `guided_*`, `allowed_token_ids`) sent with the openai
SDK's `extra_body`, as clients written for vLLM send them. They were ignored: the answer was free text."""

from __future__ import annotations

import json
import re

import openai
import pytest


def oai(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


CHAT = {"model": "demo", "messages": [{"role": "user", "content": "pick one"}], "max_tokens": 40}


@pytest.mark.parametrize("extra, check", [
    ({"guided_choice": ["yes", "no", 'say "q"']}, lambda t: t in ("yes", "no", 'say "q"')),
    ({"structured_outputs": {"choice": ["alpha", "beta"]}}, lambda t: t in ("alpha", "beta")),
    ({"guided_regex": "[a-c]{3}-[0-9]{2}"}, lambda t: re.fullmatch("[a-c]{3}-[0-9]{2}", t)),
    ({"structured_outputs": {"regex": "(cat|dog)s?"}}, lambda t: re.fullmatch("(cat|dog)s?", t)),
    ({"guided_grammar": 'root ::= "x" [0-9] [0-9]'}, lambda t: re.fullmatch("x[0-9][0-9]", t)),
    ({"guided_json": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}},
     lambda t: isinstance(json.loads(t)["a"], int)),
    ({"structured_outputs": {"json": '{"type": "object", "properties": {"b": {"type": "boolean"}}, "required": ["b"]}'}},
     lambda t: isinstance(json.loads(t)["b"], bool)),
])
def test_chat_answers_follow_vllm_constraints(live_server, extra, check):
    client = oai(live_server)
    for seed in range(3):
        message = client.chat.completions.create(**CHAT, seed=seed, extra_body=extra).choices[0].message
        assert check(message.content), (extra, message.content)
    streamed = "".join(c.choices[0].delta.content or "" for c in
                       client.chat.completions.create(**CHAT, seed=5, stream=True, extra_body=extra) if c.choices)
    assert check(streamed), (extra, streamed)


def test_completions_follow_guided_choice(live_server):
    r = oai(live_server).completions.create(model="demo", prompt="x", max_tokens=20, n=4, seed=1,
                                            extra_body={"guided_choice": ["one", "two"]})
    assert {c.text for c in r.choices} <= {"one", "two"}


def test_allowed_token_ids_are_the_only_tokens_sampled(live_server):
    """vLLM's allowed_token_ids (a classifier's label tokens): it was ignored, any token came out."""
    client = oai(live_server)
    # the demo's byte-level ids of "a" and "b", as an echo of them reads back
    texts = [client.completions.create(model="demo", prompt=[i], echo=True, max_tokens=0).choices[0].text
             for i in (64, 65)]
    assert texts == ["a", "b"]
    r = client.completions.create(model="demo", prompt="x", max_tokens=24, n=2, temperature=1.5, seed=3, logprobs=0,
                                  extra_body={"allowed_token_ids": [64, 65], "ignore_eos": True})
    for choice in r.choices:
        assert set(choice.logprobs.tokens) <= {"a", "b"} and len(choice.logprobs.tokens) == 24
        assert set(choice.text) <= {"a", "b"}
    chat = client.chat.completions.create(**{**CHAT, "max_tokens": 12}, temperature=1.5, stream=True,
                                          extra_body={"allowed_token_ids": [64, 65], "ignore_eos": True})
    streamed = "".join(c.choices[0].delta.content or "" for c in chat if c.choices)
    assert len(streamed) == 12 and set(streamed) <= {"a", "b"}


@pytest.mark.parametrize("extra", [
    {"allowed_token_ids": []}, {"allowed_token_ids": [10**6]}, {"allowed_token_ids": [-1]},
    {"allowed_token_ids": ["a"]}, {"allowed_token_ids": 5},
    {"allowed_token_ids": [64], "response_format": {"type": "json_object"}},
    {"allowed_token_ids": [64], "guided_choice": ["a"]},
])
def test_allowed_token_ids_that_cannot_be_honoured_are_400s(live_server, extra):
    for create in (lambda c: c.chat.completions.create(**CHAT, extra_body=extra),
                   lambda c: c.completions.create(model="demo", prompt="x", max_tokens=2, extra_body=extra)):
        with pytest.raises(openai.BadRequestError) as info:
            create(oai(live_server))
        assert info.value.body["param"] == "allowed_token_ids", extra
    assert live_server.wait_metric("velollm_allocated_blocks", lambda v: v == 0, model="demo") == 0


@pytest.mark.parametrize("extra, kw, param", [
    ({"guided_regex": "(a)\\1"}, {}, "regex"),  # xgrammar: backreferences are not supported
    ({"guided_grammar": "root ::= "}, {}, "grammar"),
    ({"guided_regex": "a", "guided_choice": ["b"]}, {}, "guided_choice"),
    ({"guided_regex": "a"}, {"response_format": {"type": "json_object"}}, "guided_regex"),
    ({"structured_outputs": {"structural_tag": "{}"}}, {}, "structured_outputs.structural_tag"),
    ({"guided_choice": []}, {}, "guided_choice"),
    ({"structured_outputs": "a+"}, {}, "structured_outputs"),
])
def test_constraints_that_cannot_be_honoured_are_400s(live_server, extra, kw, param):
    with pytest.raises(openai.BadRequestError) as err:
        oai(live_server).chat.completions.create(**CHAT, extra_body=extra, **kw)
    assert err.value.body["param"] == param, err.value.body
