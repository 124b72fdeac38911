"""ThinkSetting parsing (Ollama think, OpenAI reasoning_effort) and ThinkingTemplate plans."""

from __future__ import annotations

import pytest

from velollm.errors import InvalidRequest
from velollm.reasoning import ThinkingTemplate, ThinkSetting, ThinkTagParser, family_for_name

QWEN3_TAIL = ("{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- if enable_thinking is defined "
              "and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
              "{% set c = message.content.split('</think>')[-1] %}")
R1 = "{{ content.split('</think>')[-1] }}{% if add_generation_prompt %}<｜Assistant｜><think>\\n{% endif %}"
PLAIN = "{% for m in messages %}{{ m.content }}{% endfor %}"


@pytest.mark.parametrize("value,expected", [
    (None, ThinkSetting()), (True, ThinkSetting(True)), (False, ThinkSetting(False)),
    ("high", ThinkSetting(True, "high")), ("max", ThinkSetting(True, "max")),
])
def test_ollama_think_values(value, expected):
    assert ThinkSetting.from_ollama(value) == expected
    assert ThinkSetting.from_ollama(value).to_ollama() == value


@pytest.mark.parametrize("value", ["yes", "extreme", 1, ["low"]])
def test_invalid_ollama_think_is_ollamas_400(value):
    with pytest.raises(InvalidRequest, match="invalid think value") as e:
        ThinkSetting.from_ollama(value)
    assert e.value.param == "think"


@pytest.mark.parametrize("effort,expected", [
    ("none", ThinkSetting(False)), ("minimal", ThinkSetting(True, "low")), ("medium", ThinkSetting(True, "medium")),
    ("xhigh", ThinkSetting(True, "max")), (None, ThinkSetting()),
])
def test_reasoning_effort_maps_as_ollama_maps_it(effort, expected):
    assert ThinkSetting.from_openai(effort) == expected


def test_enable_thinking_template_kwarg_wins_and_bad_effort_is_a_400():
    assert ThinkSetting.from_openai("high", {"enable_thinking": False}) == ThinkSetting(False)
    assert ThinkSetting.from_openai(None, {"enable_thinking": True}) == ThinkSetting(True)
    with pytest.raises(InvalidRequest) as e:
        ThinkSetting.from_openai("hard")
    assert e.value.param == "reasoning_effort"


def test_hybrid_template_switches_thinking_with_enable_thinking():
    t = ThinkingTemplate.of(QWEN3_TAIL)
    assert t.supports_thinking and t.toggle
    default = t.plan(ThinkSetting(), model="m", strict=True)
    assert default.thinking and default.return_reasoning and default.template_kwargs == {"enable_thinking": True}
    assert isinstance(default.parser, ThinkTagParser)
    off = t.plan(ThinkSetting(False), model="m", strict=True)
    assert not off.thinking and not off.return_reasoning and off.template_kwargs == {"enable_thinking": False}


def test_always_thinking_template_drops_the_thinking_when_asked_not_to_think():
    t = ThinkingTemplate.of(R1)
    assert t.supports_thinking and not t.toggle
    off = t.plan(ThinkSetting(False), model="r1", strict=True)
    assert off.thinking and not off.return_reasoning and off.template_kwargs == {}
    assert off.parser.prompt_opens_reasoning("<｜Assistant｜><think>\n")


def test_levels_reach_templates_that_take_reasoning_effort():
    t = ThinkingTemplate.of(QWEN3_TAIL + "{{ reasoning_effort }}")
    assert t.plan(ThinkSetting(True, "low"), model="m", strict=True).template_kwargs == {
        "enable_thinking": True, "reasoning_effort": "low"}
    assert t.plan(ThinkSetting(True, "max"), model="m", strict=True).template_kwargs["reasoning_effort"] == "high"


def test_model_without_thinking():
    t = ThinkingTemplate.of(PLAIN)
    assert not t.supports_thinking
    assert t.plan(ThinkSetting(False), model="llama", strict=True).parser is None
    assert t.plan(ThinkSetting(True), model="llama", strict=False).parser is None  # OpenAI: accepted
    with pytest.raises(InvalidRequest, match='"llama" does not support thinking'):
        t.plan(ThinkSetting(True), model="llama", strict=True)


@pytest.mark.parametrize("name,thinks", [
    ("qwen3:0.6b", True), ("qwq:32b", True), ("deepseek-r1:7b", True), ("hf.co/unsloth/DeepSeek-R1-Distill-Llama-8B-GGUF", True),
    ("Qwen/Qwen3-4B-Instruct-2507", False), ("qwen3-coder:30b", False), ("llama3.2:3b", False), ("qwen2.5:7b", False),
])
def test_upstream_model_names(name, thinks):
    assert (family_for_name(name) is not None) == thinks


def test_reasoning_tokens_counted_exactly_with_the_end_token():
    plan = ThinkingTemplate.of(QWEN3_TAIL).plan(ThinkSetting(), model="m", strict=True)
    stream = plan.stream(False, end_token_id=99)
    stream.feed("", [1, 2])  # a whole answer's tokens first, its text at the end (final_only)
    stream.feed("", [3, 99, 4])
    assert stream.feed("<think>a b</think>c", [5]).content == "c" and stream.num_reasoning_tokens == 4
    counted = plan.stream(False)
    for text in ("<think>", "a", " b", "</think>", "c"):
        counted.feed(text, [0])
    assert counted.num_reasoning_tokens == 4
    cut = plan.stream(False, end_token_id=99)
    cut.feed("<think>still", [1, 2, 3])
    assert cut.num_reasoning_tokens == 3
    plain = plan.stream(False, end_token_id=99)
    plain.feed("no thinking at all", [1, 2, 3])
    assert plain.finish().content == "" and plain.num_reasoning_tokens == 0
