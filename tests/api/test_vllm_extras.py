"""vLLM's prompt extras on /v1/completions through the openai SDK's `extra_body` (`truncate_prompt_tokens`,
`add_special_tokens`), and the vLLM keys this server does not have, which are 400s naming them: all were
ignored, so a prompt was not cut, a BOS was added, and beam search or banned words silently did not happen."""

from __future__ import annotations

import openai
import pytest

USER = [{"role": "user", "content": "x"}]


def oai(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_truncate_prompt_tokens_keeps_the_last_ids(live_server):
    client = oai(live_server)
    whole = client.completions.create(model="demo", prompt="hello world " * 20, max_tokens=1, echo=True, logprobs=0)
    tokens = whole.choices[0].logprobs.tokens[:-1]
    cut = client.completions.create(model="demo", prompt="hello world " * 20, max_tokens=1, echo=True, logprobs=0,
                                    extra_body={"truncate_prompt_tokens": 7})
    assert cut.usage.prompt_tokens == 7 and cut.choices[0].logprobs.tokens[:7] == tokens[-7:]
    assert cut.choices[0].text.startswith("".join(tokens[-7:]))  # the echo is the text scored
    ids = client.completions.create(model="demo", prompt=[[1, 2, 3, 4, 5], [6, 7]], max_tokens=1, echo=True,
                                    logprobs=0, extra_body={"truncate_prompt_tokens": 3})
    assert ids.usage.prompt_tokens == 5
    assert [c.logprobs.tokens[:-1] for c in ids.choices] == [["$", "%", "&"], ["'", "("]]


def test_truncate_prompt_tokens_minus_one_fits_a_prompt_past_the_context(live_server):
    """-1: the model's length (here the context less the one token answered); the prompt is 60,000 words."""
    client = oai(live_server)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="demo", prompt="ab " * 60_000, max_tokens=1)
    r = client.completions.create(model="demo", prompt="ab " * 60_000, max_tokens=4,
                                  extra_body={"truncate_prompt_tokens": -1})
    assert r.usage.prompt_tokens == live_server.max_model_len - 1 and r.usage.completion_tokens == 1


def test_add_special_tokens_false_leaves_the_bos_out(live_server):
    client = oai(live_server)
    tokens = [client.completions.create(model="demo", prompt="ab", max_tokens=1, echo=True, logprobs=0,
                                        extra_body=extra).choices[0].logprobs.tokens[:-1]
              for extra in ({}, {"add_special_tokens": False})]
    assert tokens == [["<|begin_of_text|>", "ab"], ["ab"]]


@pytest.mark.parametrize("extra, param", [
    ({"use_beam_search": True}, "use_beam_search"), ({"bad_words": ["a"]}, "bad_words"),
    ({"return_token_ids": True}, "return_token_ids"), ({"truncate_prompt_tokens": 0}, "truncate_prompt_tokens"),
    ({"truncate_prompt_tokens": -2}, "truncate_prompt_tokens"), ({"add_special_tokens": "no"}, "add_special_tokens"),
])
def test_vllm_keys_not_honoured_are_400s(live_server, extra, param):
    with pytest.raises(openai.BadRequestError) as info:
        oai(live_server).completions.create(model="demo", prompt="x", max_tokens=2, extra_body=extra)
    assert info.value.body["param"] == param


@pytest.mark.parametrize("extra", [{"use_beam_search": True}, {"bad_words": "a"}, {"return_token_ids": True},
                                   {"truncate_prompt_tokens": 5}])
def test_chat_refuses_the_vllm_keys_it_does_not_honour(live_server, extra):
    with pytest.raises(openai.BadRequestError) as info:
        oai(live_server).chat.completions.create(model="demo", messages=USER, max_tokens=2, extra_body=extra)
    assert info.value.body["param"] == next(iter(extra))


def test_their_defaults_are_taken(live_server):
    extra = {"use_beam_search": False, "bad_words": [], "return_token_ids": False, "truncate_prompt_tokens": None,
             "add_special_tokens": True}
    client = oai(live_server)
    assert client.completions.create(model="demo", prompt="x", max_tokens=1, extra_body=extra).choices
    assert client.chat.completions.create(model="demo", messages=USER, max_tokens=1, extra_body=extra).choices
    assert live_server.wait_metric("velollm_allocated_blocks", lambda v: v == 0, model="demo") == 0


def test_cache_salt_shares_cached_prompts_only_within_a_salt(live_server):
    """vLLM's cache_salt was ignored: a tenant's prompt hit another's cached blocks (a timing side channel)."""
    client = oai(live_server)
    prompt = "the keeper's logbook lists every storm and ship " * 4

    def cached(**extra) -> int:
        usage = client.completions.create(model="demo", prompt=prompt, max_tokens=1, extra_body=extra).usage
        return usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0

    assert cached(cache_salt="tenant-a") == 0
    assert cached(cache_salt="tenant-b") == 0 and cached() == 0
    assert cached(cache_salt="tenant-a") > 0 and cached() > 0
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="demo", messages=USER, max_tokens=1, extra_body={"cache_salt": ""})
    assert info.value.body["param"] == "cache_salt"
