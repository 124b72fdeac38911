"""Tool definitions reach the chat template exactly as the client sent them: with Qwen3's real
tokenizer and template, the prompt with tools equals what transformers' apply_chat_template renders
(key order kept: Qwen3 writes each tool as `tool | tojson`, so a re-serialised tool is other tokens)."""

from __future__ import annotations

import json

from velollm.tools.tool_session import ToolSession

# Keys deliberately out of alphabetical order, at every level, and a pseudo-type ("any") that the
# grammar side normalizes but the template must see as sent.
TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "parameters": {
            "type": "object", "required": ["city"],
            "properties": {"unit": {"type": "string", "enum": ["c", "f"]}, "city": {"type": "string"}}},
        "description": "Current weather in a city"}},
    {"function": {"parameters": {"properties": {"query": {"description": "what to look for", "type": "string"},
                                                "extra": {"type": "any"}}, "type": "object"},
                  "name": "search", "strict": True}, "type": "function"},
]
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]


def test_qwen3_prompt_with_tools_is_transformers_prompt(qwen3, reference):
    tools = json.loads(json.dumps(TOOLS))  # as a request body arrives: parsed JSON, order kept
    session = ToolSession(qwen3, tools, "auto", model_type="qwen3")
    ours = session.prompt_token_ids(MESSAGES)
    theirs = reference.apply_chat_template(MESSAGES, tools=TOOLS, add_generation_prompt=True, tokenize=True,
                                           return_dict=True)["input_ids"]
    assert ours == theirs
    text = qwen3.decode(ours)
    assert json.dumps(TOOLS[0], ensure_ascii=False) in text  # the tool as sent, keys in the client's order
    assert '"extra": {"type": "any"}' in text


def test_a_bare_function_tool_is_wrapped_for_the_template(qwen3, reference):
    bare = TOOLS[0]["function"]
    session = ToolSession(qwen3, [bare], "auto", model_type="qwen3")
    assert session.render_prompt(MESSAGES) == reference.apply_chat_template(
        MESSAGES, tools=[TOOLS[0]], add_generation_prompt=True, tokenize=False)
