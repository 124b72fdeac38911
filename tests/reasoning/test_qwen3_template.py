"""Qwen3's real chat template: thinking on/off renders as transformers renders it, and plans agree."""

from __future__ import annotations

import pytest

from velollm.reasoning import ThinkingTemplate, ThinkSetting

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello.", "reasoning_content": "A greeting."},
     {"role": "user", "content": "Bye"}],
    [{"role": "user", "content": "Weather?"},
     {"role": "assistant", "content": "", "reasoning_content": "Use the tool.", "tool_calls": [
         {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
     {"role": "tool", "tool_call_id": "c1", "content": "18C"}],
]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.mark.parametrize("think", [None, True, False])
@pytest.mark.parametrize("conv", range(len(CONVERSATIONS)))
def test_plan_renders_like_transformers(qwen3, reference, think, conv):
    plan = ThinkingTemplate.of(qwen3.chat_template).plan(ThinkSetting(think), model="qwen3", strict=True)
    tools = TOOLS if conv == 2 else None
    ours = qwen3.apply_chat_template(CONVERSATIONS[conv], tools=tools, **plan.template_kwargs)
    theirs = reference.apply_chat_template(CONVERSATIONS[conv], tools=tools, tokenize=False,
                                           add_generation_prompt=True, enable_thinking=think is not False)
    assert ours == theirs
    assert ours.endswith("<think>\n\n</think>\n\n") == (think is False)
    assert not plan.prompt_opened(ours[-40:])


def test_qwen3_template_thinks_and_can_be_switched_off(qwen3):
    template = ThinkingTemplate.of(qwen3.chat_template)
    assert template.supports_thinking and template.toggle and not template.effort
    # <think> and </think> are plain added tokens: they survive decoding with skip_special_tokens.
    ids = qwen3.encode("<think>\nhm\n</think>\n\nYes", add_special_tokens=False)
    assert template.family.parser().split(qwen3.decode(ids)).content == "Yes"
