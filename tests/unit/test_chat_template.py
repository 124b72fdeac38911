"""Chat templates render (and tokenize) exactly as transformers' apply_chat_template."""

from __future__ import annotations

import datetime
import json

import pytest

from velollm.engine.text.chat_template import render_chat_template
from velollm.engine.text.tokenizer import Tokenizer
from velollm.errors import InvalidRequest, ModelLoadError

transformers = pytest.importorskip("transformers")

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Météo actuelle — current weather 🌦",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name, e.g. 'Paris'"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "now", "description": "Current time", "parameters": {}}},
]

CHATS = {
    "single": [{"role": "user", "content": "Hello there!"}],
    "multi-turn": [
        {"role": "system", "content": "You are terse.  "},
        {"role": "user", "content": "  What is 2+2?\n"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And in 日本語? 😀"},
    ],
    "tool-calls": [
        {"role": "system", "content": "Use tools when useful."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21, \"sky\": \"clair ☀\"}"},
        {"role": "tool", "tool_call_id": "call_2", "content": "second result"},
        {"role": "assistant", "content": "It is 21 °C."},
        {"role": "user", "content": "Thanks"},
    ],
}


@pytest.fixture(scope="module")
def pairs(tokenizer_folders):
    from transformers import AutoTokenizer

    return {name: (Tokenizer.from_folder(tokenizer_folders[name]), AutoTokenizer.from_pretrained(
        str(tokenizer_folders[name]))) for name in ("demo", "qwen2", "llama3", "llama2-normalizer")}


@pytest.mark.parametrize("name", ["demo", "qwen2", "llama3"])
@pytest.mark.parametrize("chat", list(CHATS))
@pytest.mark.parametrize("with_tools", [False, True])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_render_and_tokens_match_transformers(pairs, name, chat, with_tools, add_generation_prompt):
    ours, ref = pairs[name]
    messages, tools = CHATS[chat], (TOOLS if with_tools else None)
    kwargs = dict(tools=tools, add_generation_prompt=add_generation_prompt)
    text = ours.apply_chat_template(messages, **kwargs)
    assert text == ref.apply_chat_template(messages, tokenize=False, **kwargs)
    ids = ours.encode_chat(messages, **kwargs)
    assert ids == ref.apply_chat_template(messages, tokenize=True, return_dict=False, **kwargs)
    assert ids == ours.encode(text, add_special_tokens=False)


def test_demo_template_renders_tools_and_roles(pairs):
    ours, _ = pairs["demo"]
    text = ours.apply_chat_template(CHATS["tool-calls"], tools=TOOLS)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert json.dumps(TOOLS[0], indent=4, ensure_ascii=False) in text
    assert '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}' in text
    assert "<|start_header_id|>ipython<|end_header_id|>\n\n{\"temp\": 21" in text
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert "None" not in text
    ids = ours.encode_chat(CHATS["single"])
    assert ids.count(ours.bos_token_id) == 1 and ids[0] == ours.bos_token_id


def test_llama2_template_and_raise_exception(pairs):
    ours, ref = pairs["llama2-normalizer"]
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"}]
    assert ours.encode_chat(chat) == ref.apply_chat_template(chat, tokenize=True, return_dict=False,
                                                             add_generation_prompt=True)
    with pytest.raises(InvalidRequest, match="Only user and assistant roles"):
        ours.apply_chat_template([{"role": "system", "content": "x"}])


@pytest.mark.parametrize("template", [
    "{{ messages[0].content | tojson }}|{{ tools | tojson(indent=2) }}|{{ {'b': 1, 'a': [1, 2]} | tojson }}",
    "{% for m in messages %}{% generation %}<{{ m.role }}>{{ m.content }}{% endgeneration %}{% endfor %}",
    "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}"
    "{{ dict(a=1) | tojson }}{% for x in [1, 2, 3] %}{% if x == 2 %}{% break %}{% endif %}{{ x }}{% endfor %}",
    "{{ bos_token }}{{ eos_token }}{{ custom_flag }}  \n  {% if true %}\n  trimmed\n{% endif %}\n",
])
def test_template_features_match_transformers(pairs, template):
    ours, ref = pairs["qwen2"]
    messages = [{"role": "user", "content": "héllo \"<tag>\" 😀"}, {"role": "assistant", "content": "ok"}]
    got = ours.apply_chat_template(messages, tools=TOOLS, chat_template=template, custom_flag="X")
    assert got == ref.apply_chat_template(messages, tools=TOOLS, chat_template=template, custom_flag="X",
                                          tokenize=False, add_generation_prompt=True)


def test_tojson_keeps_unicode_and_html():
    out = render_chat_template("{{ messages[0] | tojson }}", [{"role": "user", "content": "é <b>&"}])
    assert out == '{"role": "user", "content": "é <b>&"}'


def test_strftime_now_and_extra_kwargs():
    out = render_chat_template("{{ strftime_now('%Y') }}-{{ enable_thinking }}", [{"role": "user", "content": ""}],
                               enable_thinking=False)
    assert out in {f"{datetime.datetime.now().year}-False", f"{datetime.datetime.now().year + 1}-False"}


def test_kwargs_override_special_tokens():
    out = render_chat_template("{{ bos_token }}", [{"role": "user", "content": ""}],
                               special_tokens={"bos_token": "<s>"}, bos_token="<B>")
    assert out == "<B>"


@pytest.mark.parametrize("template", [
    "{{ messages.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__base__ }}",
    "{% set ns = namespace() %}{% set ns._x = 1 %}",
    "{{ messages.append(1) }}",
])
def test_sandbox_refuses_escapes(template):
    with pytest.raises(InvalidRequest):
        render_chat_template(template, [{"role": "user", "content": "x"}])


def test_errors_are_typed(tokenizer_folders):
    with pytest.raises(ModelLoadError):
        render_chat_template("{% for %}", [{"role": "user", "content": "x"}])
    with pytest.raises(InvalidRequest):
        render_chat_template("{{ x }}", [])
    with pytest.raises(InvalidRequest):
        render_chat_template("{{ x }}", [{"role": "user", "content": "x"}], tools=["not a dict"])
    import tokenizers

    backend = tokenizers.Tokenizer.from_file(str(tokenizer_folders["qwen2"] / "tokenizer.json"))
    with pytest.raises(InvalidRequest, match="no chat template"):
        Tokenizer(backend).apply_chat_template([{"role": "user", "content": "x"}])
