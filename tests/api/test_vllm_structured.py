"""vLLM's constrained-decoding keys (`structured_outputs`, `guided_*`) sent with the openai SDK's `extra_body`,
as clients written for vLLM send them. They were ignored: the answer was free text."""

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
