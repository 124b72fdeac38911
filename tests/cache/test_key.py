"""Exact and context keys: everything that shapes the answer is in them, delivery details are not."""

from __future__ import annotations

import pytest

from velollm.cache.key import cache_key, tenant_of

CHAT = "/v1/chat/completions"
T = tenant_of(None)


def chat(question: str = "What is the capital of France?", **extra):
    return {"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                       {"role": "user", "content": question}], "temperature": 0, **extra}


@pytest.mark.parametrize("change", [
    {"model": "other"}, {"temperature": 0.5}, {"top_p": 0.9}, {"seed": 3}, {"max_tokens": 5}, {"stop": ["x"]},
    {"presence_penalty": 1}, {"frequency_penalty": 1}, {"logit_bias": {"5": 1}}, {"n": 2}, {"logprobs": True},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, {"tool_choice": "none"},
    {"response_format": {"type": "json_object"}},
])
def test_every_answer_shaping_field_changes_the_exact_key(change):
    assert cache_key(CHAT, chat(), T).exact != cache_key(CHAT, chat(**change), T).exact


@pytest.mark.parametrize("change", [{"stream": True}, {"stream_options": {"include_usage": True}}, {"user": "u1"},
                                    {"cache": {"ttl": 5}}, {"keep_alive": "5m"}])
def test_delivery_fields_leave_the_key_alone(change):
    assert cache_key(CHAT, chat(), T) == cache_key(CHAT, chat(**change), T)


def test_context_is_everything_but_the_last_question():
    a, b = cache_key(CHAT, chat(), T), cache_key(CHAT, chat("Capital of France?"), T)
    assert a.exact != b.exact and a.context == b.context and b.query == "Capital of France?"
    other_system = chat()
    other_system["messages"][0]["content"] = "answer like a pirate"
    assert cache_key(CHAT, other_system, T).context != a.context
    assert cache_key(CHAT, chat(temperature=1), T).context != a.context


def test_tenants_models_endpoints_and_namespaces_never_share_keys():
    base = cache_key(CHAT, chat(), T)
    assert cache_key(CHAT, chat(), tenant_of("Bearer k2")).exact != base.exact
    assert cache_key(CHAT, chat(), tenant_of("Bearer k2")).context != base.context
    assert cache_key(CHAT, chat(model="m2"), T).context != base.context
    assert cache_key("/api/chat", chat(), T).exact != base.exact
    assert cache_key(CHAT, chat(), T, namespace="n").exact != base.exact


def test_no_semantic_question_without_a_plain_user_message_last():
    tool_last = chat()
    tool_last["messages"].append({"role": "tool", "content": "42", "tool_call_id": "c"})
    assert cache_key(CHAT, tool_last, T).query is None
    image = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "data:x"}}]}]}
    assert cache_key(CHAT, image, T).query is None
    parts = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}]}
    assert cache_key(CHAT, parts, T).query == "hi there"
    ollama_image = {"model": "m", "messages": [{"role": "user", "content": "what is this", "images": ["aGk="]}]}
    assert cache_key("/api/chat", ollama_image, T).query is None


def test_prompts_and_ollama_options():
    gen = {"model": "m", "prompt": "Why is the sky blue?", "options": {"temperature": 0, "num_thread": 4}}
    key = cache_key("/api/generate", gen, T)
    assert key.query == "Why is the sky blue?" and key.kind == "ollama_generate"
    same = {**gen, "options": {"temperature": 0, "num_thread": 8}}
    assert cache_key("/api/generate", same, T).exact == key.exact  # runtime option
    assert cache_key("/api/generate", {**gen, "options": {"temperature": 0.2}}, T).exact != key.exact
    assert cache_key("/api/generate", {**gen, "system": "be brief"}, T).context != key.context
    assert cache_key("/v1/completions", {"model": "m", "prompt": ["one prompt"]}, T).query == "one prompt"
    assert cache_key("/v1/completions", {"model": "m", "prompt": ["a", "b"]}, T).query is None


def test_null_and_empty_fields_mean_not_given():
    base = cache_key("/api/chat", chat(), T)
    assert cache_key("/api/chat", chat(tools=[], format=None, options={}), T) == base
    with_nulls = chat()
    with_nulls["messages"][1]["images"] = []
    with_nulls["messages"][0]["name"] = None
    assert cache_key("/api/chat", with_nulls, T) == base


def test_responses_keys_are_over_the_canonical_request():
    path = "/v1/responses"
    text = {"model": "m", "input": "Capital of France?", "instructions": "be brief", "temperature": 0}
    item = {**text, "input": [{"type": "message", "role": "user",
                               "content": [{"type": "input_text", "text": "Capital of France?"}]}]}
    a = cache_key(path, text, T)
    assert a == cache_key(path, item, T) and a.query == "Capital of France?" and a.kind == "responses"
    assert a == cache_key(path, {**text, "store": False, "stream": True, "metadata": {"x": "y"}}, T)
    for change in ({"instructions": "be long"}, {"max_output_tokens": 5}, {"top_p": 0.5}, {"model": "n"},
                   {"tools": [{"type": "function", "name": "f"}]}, {"text": {"format": {"type": "json_object"}}}):
        other = cache_key(path, {**text, **change}, T)
        assert other.exact != a.exact and other.context != a.context
    para = cache_key(path, {**text, "input": "What is the capital of France?"}, T)
    assert para.exact != a.exact and para.context == a.context
    assert cache_key(path, text, T).exact != cache_key(CHAT, {"model": "m", "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "Capital of France?"}],
        "temperature": 0}, T).exact
    tool_result = {**text, "input": [{"type": "function_call_output", "call_id": "c", "output": "42"}]}
    assert cache_key(path, tool_result, T).query is None
