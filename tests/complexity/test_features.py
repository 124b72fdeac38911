"""RequestFeatures from bodies in each wire format (unvalidated: wrong types count as absent)."""

from __future__ import annotations

import pytest

from velollm.complexity.features import extract


def test_openai_chat_messages_tools_format_reasoning():
    body = {"model": "auto", "messages": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": [{"type": "text", "text": "what is in this image?"},
                                     {"type": "image_url", "image_url": {"url": "data:,"}}]}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        "reasoning_effort": "high"}
    f = extract(body, "/v1/chat/completions")
    assert (f.num_turns, f.num_messages) == (2, 4)
    assert f.query == "what is in this image?"
    assert f.has_tools and f.has_images and f.reasoning
    assert f.format == "json_schema"
    assert f.text.startswith("You are helpful.\nhi\nhello\n")
    assert f.num_chars == len(f.text)


def test_openai_plain_chat_has_no_flags():
    f = extract({"messages": [{"role": "user", "content": "hello there"}], "response_format": {"type": "text"},
                 "reasoning_effort": "none", "tools": []}, "/v1/chat/completions")
    assert not (f.has_tools or f.has_images or f.reasoning)
    assert (f.format, f.num_turns, f.num_tokens) == ("text", 1, 2)


def test_openai_completion_prompt_string_or_list():
    assert extract({"prompt": "abc def"}, "/v1/completions").query == "abc def"
    f = extract({"prompt": ["a", "b"], "response_format": {"type": "json_object"}}, "/v1/completions")
    assert (f.text, f.num_turns, f.format) == ("a\nb", 1, "json")
    assert extract({"prompt": [1, 2, 3]}, "/v1/completions").num_turns == 0  # token ids: no text


def test_responses_input_instructions_format_reasoning():
    f = extract({"input": "Explain monads", "instructions": "Be brief", "reasoning": {"effort": "low"},
                 "text": {"format": {"type": "json_object"}}}, "/v1/responses")
    assert (f.query, f.text, f.format, f.reasoning) == ("Explain monads", "Be brief\nExplain monads", "json", True)
    f = extract({"input": [{"role": "user", "content": [{"type": "input_text", "text": "q1"}]},
                           {"type": "function_call_output", "call_id": "c", "output": "42"},
                           {"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]}]},
                "/v1/responses")
    assert (f.num_turns, f.num_messages, f.has_images, f.query) == (2, 3, True, "")


def test_a_responses_count_reads_as_its_create():
    """POST /v1/responses/input_tokens: the virtual model picks the model the create of the same body would (the
    count is that model's prompt); read as a chat it had no query nor text."""
    body = {"input": "Explain monads", "instructions": "Be brief", "tools": [{"type": "function", "name": "f"}]}
    assert extract(body, "/v1/responses/input_tokens") == extract(body, "/v1/responses")
    assert extract(body, "/v1/responses/input_tokens").query == "Explain monads"


def test_ollama_chat_and_generate():
    f = extract({"messages": [{"role": "user", "content": "hi", "images": ["aGk="]}], "format": "json",
                 "think": True, "tools": [{"type": "function"}]}, "/api/chat")
    assert (f.has_images, f.format, f.reasoning, f.has_tools) == (True, "json", True, True)
    f = extract({"prompt": "why?", "system": "sys", "format": {"type": "object"}, "think": "high"}, "/api/generate")
    assert (f.text, f.query, f.format, f.reasoning) == ("sys\nwhy?", "why?", "json_schema", True)
    assert not extract({"prompt": "x", "think": False}, "/api/generate").reasoning


@pytest.mark.parametrize("body", [
    {}, {"messages": "oops"}, {"messages": [1, None, {"role": 3, "content": {"a": 1}}]}, {"prompt": 5},
    {"tools": "x", "response_format": "json", "reasoning": "high", "format": 7, "think": {"a": 1}},
])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/api/chat",
                                  "/api/generate"])
def test_malformed_bodies_never_raise(body, path):
    f = extract(body, path)
    assert f.format in ("text", "json", "json_schema")
