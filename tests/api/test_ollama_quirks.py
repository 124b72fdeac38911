"""What Ollama accepts that a stricter reading would refuse, through the official ollama client against a
live `velollm serve` (demo model)."""

from __future__ import annotations

import ollama


def _client(server) -> ollama.Client:
    return ollama.Client(host=server.url, timeout=60)


def test_a_null_option_keeps_its_default(live_server):
    # the python client sends {"temperature": null} as given; Ollama's Options.FromMap skips a null
    client = _client(live_server)
    opts = {"num_predict": 3, "seed": 7, "temperature": None, "top_k": None}
    r = client.generate(model="demo", prompt="hi", options=opts)
    assert r.done and r.eval_count == 3
    c = client.chat(model="demo", messages=[{"role": "user", "content": "hi"}], options=opts)
    assert c.done and c.eval_count == 3
    same = client.generate(model="demo", prompt="hi", options={"num_predict": 3, "seed": 7})
    assert r.response == same.response  # the defaults, as if the keys were absent


def test_consecutive_messages_of_one_role_are_one_message(live_server):
    # Ollama collates before rendering: two system messages in a row are one (the demo template, like
    # Llama 3's, takes one system message and refuses a second)
    client = _client(live_server)
    opts = {"num_predict": 4, "temperature": 0}
    split = client.chat(model="demo", options=opts, messages=[
        {"role": "system", "content": "Be terse."}, {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "hi"}, {"role": "user", "content": "how are you?"}])
    joined = client.chat(model="demo", options=opts, messages=[
        {"role": "system", "content": "Be terse.\n\nAnswer in French."},
        {"role": "user", "content": "hi\n\nhow are you?"}])
    assert split.prompt_eval_count == joined.prompt_eval_count
    assert split.message.content == joined.message.content


def test_a_template_may_carry_go_comments(live_server):
    client = _client(live_server)
    opts = {"num_predict": 1, "temperature": 0}
    plain = client.generate(model="demo", prompt="hi", template="Q: {{ .Prompt }} A:", options=opts)
    commented = client.generate(model="demo", prompt="hi", options=opts,
                                template="{{/* the question */}}Q: {{ .Prompt }} A:{{- /* trimmed */ -}}")
    assert commented.context == plain.context


def test_debug_render_only_answers_the_prompt_without_running(live_server):
    import httpx

    url = live_server.url
    g = httpx.post(f"{url}/api/generate", json={"model": "demo", "prompt": "hello", "system": "Be brief.",
                                                "_debug_render_only": True}, timeout=60).json()
    rendered = g["_debug_info"]["rendered_template"]
    assert "Be brief." in rendered and "hello" in rendered and g["done"] is False and "eval_count" not in g
    c = httpx.post(f"{url}/api/chat", json={"model": "demo", "_debug_render_only": True,
                                            "messages": [{"role": "user", "content": "hello"}]}, timeout=60).json()
    assert "hello" in c["_debug_info"]["rendered_template"] and c["message"]["content"] == ""
