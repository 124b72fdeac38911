"""Tools and tool-call history render through each family's template and parse back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tools.corpus import TOOLS
from velollm.engine.text.tokenizer import Tokenizer
from velollm.tools.tool_parsers import ToolFamily, detect_family
from velollm.tools.tool_prompt import (
    render_with_tools,
    template_supports_tools,
    to_template_messages,
)
from velollm.tools.tool_repair import ToolRepairer

TEMPLATES = Path(__file__).parent / "templates"
H, L, M = ToolFamily.HERMES, ToolFamily.LLAMA3, ToolFamily.MISTRAL

CALLS = [
    {
        "id": "call_abc123def456",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris", "days": 2}'},
    },
    {"id": "call_zzz", "type": "function", "function": {"name": "now", "arguments": "{}"}},
]
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris, and the time?"},
    {"role": "assistant", "content": None, "tool_calls": CALLS},
    {"role": "tool", "tool_call_id": "call_abc123def456", "content": "sunny"},
    {"role": "tool", "tool_call_id": "call_zzz", "content": [{"type": "text", "text": "12:00"}]},
    {"role": "user", "content": "Thanks. Again for Rome?"},
]
# Where the last assistant turn starts and ends in each template.
TURNS = {
    H: ("<|im_start|>assistant\n", "<|im_end|>"),
    L: ("<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eom_id|>"),
    M: ("[/INST]", "</s>"),
}


def _tokenizer(byte_bpe: Tokenizer, name: str) -> Tokenizer:
    template = (TEMPLATES / f"{name}.jinja").read_text()
    return Tokenizer(byte_bpe.backend, chat_template=template, bos_token="<|start|>", eos_token="</s>")


@pytest.mark.parametrize("family,name", [(H, "hermes"), (L, "llama3"), (M, "mistral")])
def test_history_renders_through_the_family_template(byte_bpe: Tokenizer, family: ToolFamily, name: str) -> None:
    tok = _tokenizer(byte_bpe, name)
    assert template_supports_tools(tok.chat_template) and detect_family(tok.chat_template) is family
    prompt = render_with_tools(tok, CONVERSATION, TOOLS, family)
    assert '"get_weather"' in prompt and "fahrenheit" in prompt  # the tools, schema included
    assert '{"city": "Paris", "days": 2}' in prompt  # arguments rendered as an object, not a string
    assert '\\"city\\"' not in prompt
    if family is not M:
        assert "sunny" in prompt and "12:00" in prompt


def test_mistral_ids_are_nine_characters_and_consistent(byte_bpe: Tokenizer) -> None:
    messages = to_template_messages(CONVERSATION, M)
    ids = [c["id"] for c in messages[2]["tool_calls"]]
    assert all(len(i) == 9 and i.isalnum() for i in ids)
    assert [messages[3]["tool_call_id"], messages[4]["tool_call_id"]] == ids
    assert messages[3]["name"] == "get_weather"  # tool messages get the name of their call
    prompt = render_with_tools(_tokenizer(byte_bpe, "mistral"), CONVERSATION[:-1] + [CONVERSATION[-1]], TOOLS, M)
    assert f'"call_id": "{ids[0]}"' in prompt


def test_results_without_ids_answer_the_calls_in_order(byte_bpe: Tokenizer) -> None:
    """Ollama's clients send tool results with neither id nor (LangChain's ChatOllama) name: each answers the
    next unanswered call of the assistant message before it, as an id would; a name picks its call."""
    ollama_calls = [{"function": {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}}
                    for c in CALLS]
    history = [*CONVERSATION[:2], {"role": "assistant", "content": "", "tool_calls": ollama_calls},
               {"role": "tool", "content": "sunny"}, {"role": "tool", "content": "12:00"}]
    messages = to_template_messages(history, M)
    ids = [c["id"] for c in messages[2]["tool_calls"]]
    assert [(m["tool_call_id"], m["name"]) for m in messages[3:]] == [(ids[0], "get_weather"), (ids[1], "now")]
    named = [*history[:3], {"role": "tool", "name": "now", "content": "12:00"}, {"role": "tool", "content": "sunny"}]
    assert [m["name"] for m in to_template_messages(named, L)[3:]] == ["now", "get_weather"]
    prompt = render_with_tools(_tokenizer(byte_bpe, "plain"), history, TOOLS, L)
    assert "Result of get_weather:\nsunny" in prompt and "Result of now:\n12:00" in prompt


@pytest.mark.parametrize(
    "family,name", [(H, "hermes"), (L, "llama3"), (M, "mistral"), (H, "plain"), (L, "plain"), (M, "plain")]
)
def test_rendered_calls_parse_back(byte_bpe: Tokenizer, family: ToolFamily, name: str) -> None:
    tok = _tokenizer(byte_bpe, name)
    messages = CONVERSATION[:3]
    prompt = render_with_tools(tok, messages, TOOLS, family, add_generation_prompt=False)
    start, end = TURNS[family] if name != "plain" else ("<|im_start|>assistant\n", "<|im_end|>")
    turn = prompt[prompt.rindex(start) + len(start) :]
    turn = turn[: turn.index(end)] if end in turn else turn
    result = ToolRepairer(TOOLS, family).repair_text(turn)
    assert [(c.name, json.loads(c.arguments)) for c in result.calls] == [
        ("get_weather", {"city": "Paris", "days": 2}),
        ("now", {}),
    ]
    assert result.ok


@pytest.mark.parametrize("family", [H, L, M])
def test_fallback_for_templates_without_tools(byte_bpe: Tokenizer, family: ToolFamily) -> None:
    tok = _tokenizer(byte_bpe, "plain")
    assert not template_supports_tools(tok.chat_template)
    prompt = render_with_tools(tok, CONVERSATION, TOOLS, family)
    system = prompt.split("<|im_end|>")[0]
    assert "Be brief." in system and '"name": "get_weather"' in system
    marker = {H: "<tool_call>", L: '"parameters"', M: "[TOOL_CALLS]"}[family]
    assert marker in system  # the family's call format is taught
    assert "Result of get_weather:\nsunny" in prompt and "12:00" in prompt


def test_broken_arguments_in_history_are_repaired() -> None:
    calls = [{"id": "c1", "type": "function", "function": {"name": "search", "arguments": '{"query": "unterminated'}}]
    messages = to_template_messages([{"role": "assistant", "tool_calls": calls}], H)
    assert messages[0]["tool_calls"][0]["function"]["arguments"] == {"query": "unterminated"}


def test_no_tools_renders_plainly(byte_bpe: Tokenizer) -> None:
    tok = _tokenizer(byte_bpe, "hermes")
    prompt = render_with_tools(tok, [{"role": "user", "content": "hi"}], None, H)
    assert "<tools>" not in prompt and prompt.endswith("<|im_start|>assistant\n")
