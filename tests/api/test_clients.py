"""The official openai and ollama clients against a live server (stub engine, and `velollm serve demo`)."""

from __future__ import annotations


import ollama
import openai
import pytest

MAX = 12  # output tokens per request: enough to see streaming, small enough to be fast


def oai(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def messages(text: str = "Hello there") -> list[dict]:
    return [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]


def test_first_log_line_says_demo(live_server):
    first = live_server.log.read_text().splitlines()[0]
    assert "demo" in first and "no --model" in first


def test_models_list_and_get(server):
    client = oai(server)
    ids = [m.id for m in client.models.list().data]
    assert ids == ["demo"]
    assert client.models.retrieve("demo").id == "demo"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_chat_non_streaming_usage_and_finish(server):
    r = oai(server).chat.completions.create(model="demo", messages=messages(), max_tokens=MAX, temperature=0,
                                            extra_body={"ignore_eos": True})
    choice = r.choices[0]
    assert r.object == "chat.completion" and r.model == "demo"
    assert choice.message.role == "assistant" and choice.finish_reason == "length"
    assert r.usage.completion_tokens == MAX
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + MAX


def test_chat_streamed_equals_non_streamed_greedy(server):
    client = oai(server)
    kw = dict(model="demo", messages=messages("stream me"), max_tokens=MAX, temperature=0,
              extra_body={"ignore_eos": True})
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == MAX
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_completions_streamed_equals_non_streamed(server):
    client = oai(server)
    kw = dict(model="demo", prompt="Once upon a time", max_tokens=MAX, temperature=0, extra_body={"ignore_eos": True})
    whole = client.completions.create(**kw)
    chunks = list(client.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert whole.object == "text_completion" and whole.usage.completion_tokens == MAX
    assert chunks[-1].usage.completion_tokens == MAX


def test_completions_prompt_forms_and_echo(server):
    client = oai(server)
    r = client.completions.create(model="demo", prompt=["a b", "c d"], max_tokens=3, temperature=0, n=2,
                                  extra_body={"ignore_eos": True})
    assert sorted(c.index for c in r.choices) == [0, 1, 2, 3]
    assert r.choices[0].text == r.choices[1].text  # greedy: both choices of one prompt agree
    assert r.usage.completion_tokens == 12
    by_text = client.completions.create(model="demo", prompt="a b", max_tokens=3, temperature=0,
                                        extra_body={"ignore_eos": True})
    assert by_text.choices[0].text == r.choices[0].text  # same prompt, same greedy output
    r = client.completions.create(model="demo", prompt="echo this", max_tokens=2, echo=True, temperature=0)
    assert r.choices[0].text.startswith("echo this")


def test_chat_n2_and_seed_reproducible(server):
    client = oai(server)
    kw = dict(model="demo", messages=messages("sample"), max_tokens=MAX, temperature=1.0, seed=1234,
              extra_body={"ignore_eos": True})
    a = client.chat.completions.create(**kw, n=2)
    b = client.chat.completions.create(**kw, n=2)
    assert [c.index for c in a.choices] == [0, 1]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert a.usage.completion_tokens == 2 * MAX
    streamed = {}
    for chunk in client.chat.completions.create(**kw, n=2, stream=True):
        for c in chunk.choices:
            streamed[c.index] = streamed.get(c.index, "") + (c.delta.content or "")
    assert [streamed[0], streamed[1]] == [c.message.content for c in a.choices]


def test_stop_string(server):
    client = oai(server)
    base = client.completions.create(model="demo", prompt="stop test", max_tokens=MAX, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    stop = base[4:6]
    assert stop.strip(), "the greedy text should have a usable stop string"
    r = client.completions.create(model="demo", prompt="stop test", max_tokens=MAX, temperature=0, stop=[stop],
                                  extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == base[: base.index(stop)]


def test_logprobs_chat_and_completions(server):
    client = oai(server)
    r = client.chat.completions.create(model="demo", messages=messages(), max_tokens=4, temperature=0,
                                       logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
    content = r.choices[0].logprobs.content
    assert len(content) == 4
    for entry in content:
        assert len(entry.top_logprobs) == 3 and entry.logprob <= 0
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob
    assert all(isinstance(e.token, str) and e.bytes is not None for e in content)
    c = client.completions.create(model="demo", prompt="hi", max_tokens=3, temperature=0, logprobs=2,
                                  extra_body={"ignore_eos": True})
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == 3 and len(lp.token_logprobs) == 3 and len(lp.top_logprobs[0]) == 2
    assert lp.text_offset[0] == 0


async def test_async_client_chat_and_completions(server):
    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)
    chat = await client.chat.completions.create(model="demo", messages=messages(), max_tokens=MAX, temperature=0,
                                                extra_body={"ignore_eos": True})
    stream = await client.completions.create(model="demo", prompt="async", max_tokens=MAX, temperature=0,
                                             stream=True, extra_body={"ignore_eos": True})
    text = "".join([c.choices[0].text async for c in stream if c.choices])
    whole = await client.completions.create(model="demo", prompt="async", max_tokens=MAX, temperature=0,
                                            extra_body={"ignore_eos": True})
    assert chat.usage.completion_tokens == MAX and text == whole.choices[0].text
    await client.close()


def test_ollama_generate_and_chat(server):
    client = ollama.Client(host=server.url, timeout=60)
    opts = {"num_predict": MAX, "temperature": 0, "seed": 1}
    g = client.generate(model="demo", prompt="Why is the sky blue?", options=opts)
    assert g.done and g.done_reason in ("stop", "length") and g.eval_count <= MAX
    assert g.prompt_eval_count > 0 and g.total_duration >= g.eval_duration > 0 and g.context
    streamed = list(client.generate(model="demo", prompt="Why is the sky blue?", options=opts, stream=True))
    assert "".join(p.response for p in streamed) == g.response
    assert streamed[-1].done and not any(p.done for p in streamed[:-1])
    msgs = [{"role": "user", "content": "hi"}]
    c = client.chat(model="demo", messages=msgs, options=opts)
    assert c.message.role == "assistant" and c.done and c.eval_count <= MAX
    chunks = list(client.chat(model="demo", messages=msgs, options=opts, stream=True))
    assert "".join(p.message.content for p in chunks) == c.message.content
    assert chunks[-1].done_reason == c.done_reason


def test_ollama_load_list_show_ps(server):
    client = ollama.Client(host=server.url, timeout=60)
    assert client.generate(model="demo", prompt="").done_reason == "load"
    assert client.chat(model="demo", messages=[]).done_reason == "load"
    [entry] = client.list().models
    assert entry.model == "demo" and entry.size > 0 and entry.details.family
    show = client.show("demo")
    assert show.capabilities == ["completion", "tools"] and show.details.parameter_size
    arch = show.modelinfo["general.architecture"]
    assert show.modelinfo[f"{arch}.context_length"] > 0 and show.modelinfo[f"{arch}.block_count"] > 0
    [running] = client.ps().models
    assert running.model == "demo" and running.context_length == server.max_model_len
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model="nope", prompt="x")
    assert err.value.status_code == 404 and err.value.error == "model 'nope' not found"
