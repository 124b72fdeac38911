"""ToolSession: one request's prompt, constraint, parsing and retries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tools.corpus import TOOLS
from velollm.engine.text.tokenizer import Tokenizer
from velollm.errors import InvalidRequest
from velollm.tools.tool_parsers import ToolFamily
from velollm.tools.tool_session import ToolCallConfig, ToolSession

TEMPLATES = Path(__file__).parent / "templates"


@pytest.fixture()
def qwen_like(byte_bpe: Tokenizer) -> Tokenizer:
    return Tokenizer(byte_bpe.backend, chat_template=(TEMPLATES / "hermes.jinja").read_text(), eos_token="<eos>")


def test_session_end_to_end(qwen_like: Tokenizer) -> None:
    session = ToolSession(qwen_like, TOOLS, "required", parallel_tool_calls=False)
    assert session.family is ToolFamily.HERMES and session.active and not session.skip_special_tokens
    assert session.structured_output is not None and session.structured_output.kind == "structural_tag"
    messages = [{"role": "user", "content": "weather in Paris?"}]
    assert "<tools>" in session.render_prompt(messages)
    assert session.prompt_token_ids(messages) == qwen_like.encode(
        session.render_prompt(messages), add_special_tokens=False
    )
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>'
    result = session.parse(text)
    assert [c.name for c in result.calls] == ["get_weather"]  # parallel_tool_calls=false: one call
    assert ToolSession.finish_reason(result, "stop") == "tool_calls"
    assert session.stream_parser().incremental  # constrained: arguments stream as they come


def test_retry_flow(qwen_like: Tokenizer) -> None:
    session = ToolSession(qwen_like, TOOLS, "auto", config=ToolCallConfig(retries=1, constrain_auto=False))
    assert session.structured_output is None and not session.stream_parser().incremental
    bad = '<tool_call>{"name": "get_weather", "arguments": {"days": 2}}</tool_call>'
    result = session.parse(bad)
    assert session.should_retry(result, attempt=0) and not session.should_retry(result, attempt=1)
    retry = session.retry_messages([{"role": "user", "content": "hi"}], bad, result)
    assert retry[-2] == {"role": "assistant", "content": bad}
    assert "missing required argument 'city'" in retry[-1]["content"]
    assert result.content == bad and ToolSession.finish_reason(result, "stop") == "stop"


def test_tool_choice_none_leaves_text_alone(qwen_like: Tokenizer) -> None:
    session = ToolSession(qwen_like, TOOLS, "none")
    text = '<tool_call>{"name": "now"}</tool_call>'
    assert session.structured_output is None and session.skip_special_tokens
    assert session.parse(text).content == text and not session.parse(text).calls


def test_bad_tool_choice(qwen_like: Tokenizer) -> None:
    with pytest.raises(InvalidRequest):
        ToolSession(qwen_like, TOOLS, {"type": "function"})
    with pytest.raises(InvalidRequest):
        ToolSession(qwen_like, None, "required")
    assert json.loads(
        ToolSession(qwen_like, TOOLS, {"type": "function", "function": {"name": "now"}}).structured_output.value
    )  # type: ignore[union-attr]


QWEN3_GO = """{{- if .Tools }}<|im_start|>system
<tools>
{{- range .Tools }}
{{ json .Function }}
{{- end }}
</tools>
For each function call, return it within <tool_call></tool_call> XML tags.<|im_end|>
{{ end }}
{{- range .Messages }}<|im_start|>{{ .Role }}
{{ if .ToolCalls }}<tool_call>
{{- range .ToolCalls }}
{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{- end }}</tool_call>{{ else }}{{ .Content }}{{ end }}<|im_end|>
{{ end }}<|im_start|>assistant
"""


@pytest.mark.parametrize("model_type", ["llama", "mistral", None])
def test_a_store_models_go_template_names_the_tool_call_format(byte_bpe: Tokenizer, model_type) -> None:
    """A store model whose GGUF has no jinja template speaks its Ollama TEMPLATE layer: the calls are parsed in
    the format that template writes (<tool_call> here), not the one guessed from the architecture (a llama-arch
    fine-tune with a Hermes template was parsed as Llama 3 JSON: its <tool_call> blocks came back as content)."""
    tokenizer = Tokenizer(byte_bpe.backend, chat_template=None, eos_token="<eos>")
    tokenizer.go_template = QWEN3_GO
    session = ToolSession(tokenizer, TOOLS, "auto", model_type=model_type)
    assert session.family is ToolFamily.HERMES
    messages = [{"role": "user", "content": "weather in Paris?"}]
    assert "<tools>" in session.render_prompt(messages)  # the template's own tools block, not the fallback's
    result = session.parse('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>')
    assert [(c.name, json.loads(c.arguments)) for c in result.calls] == [("get_weather", {"city": "Paris"})]
    assert result.content == ""
