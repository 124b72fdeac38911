"""Tools and tool-call history into the prompt.

The model's own chat template renders tools when it knows how (the HF `tools` variable). Messages
arrive in OpenAI shape (assistant `tool_calls[].function.arguments` as a JSON string, `tool`
messages with `tool_call_id`); HF templates expect arguments as objects, and Mistral's wants
9-character ids. Templates without tool support get a system message with the tools and the
family's call format instead, and the history written as plain text in that format.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from velollm.tools.tool_parsers import ToolFamily
from velollm.tools.tool_schema import ToolSpec, template_tools, tool_specs

if TYPE_CHECKING:
    from velollm.engine.text.tokenizer import Tokenizer

_USES_TOOLS = re.compile(r"\btools\b")

_INSTRUCTIONS = {
    ToolFamily.HERMES: (
        "To call a function, reply with one block per call:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <arguments as a JSON object>}\n</tool_call>'
    ),
    ToolFamily.LLAMA3: (
        'To call a function, reply only with JSON of the form {"name": <function-name>, "parameters": '
        '<arguments as a JSON object>}; separate several calls with "; ". Do not use variables.'
    ),
    ToolFamily.MISTRAL: (
        'To call functions, reply with [TOOL_CALLS][{"name": <function-name>, "arguments": '
        "<arguments as a JSON object>}, ...]"
    ),
}


def _go_template_takes_tools(tokenizer: Any) -> bool:
    """A model rendered by its Ollama TEMPLATE layer that names .Tools gets the tools, as in Ollama."""
    from velollm.engine.text.template_layer import go_layer

    go = go_layer(tokenizer)
    if go is None:
        return False
    from velollm.engine.text.go_template.chat import uses_tools

    return uses_tools(go)


def takes_tools(tokenizer: Any) -> bool:
    """Whether a request may carry tools: not when the model's Ollama TEMPLATE layer renders its chats and names
    no .Tools (Ollama's tools capability; it refuses such a request, and the layer would drop a fallback's system
    message with the tools on many templates). A jinja template takes them always: its own rendering or the
    fallback prompt."""
    from velollm.engine.text.template_layer import go_layer

    return go_layer(tokenizer) is None or _go_template_takes_tools(tokenizer)


def template_supports_tools(template: str | Mapping[str, str] | None) -> bool:
    if isinstance(template, Mapping):
        return any(template_supports_tools(t) for t in template.values())
    return bool(template) and bool(_USES_TOOLS.search(template))  # type: ignore[arg-type]


def _arguments(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else {}
        except ValueError:
            # Replayed history may hold broken arguments (vLLM #47761 crashed on these): repair
            # them rather than refuse the conversation.
            import json_repair

            repaired = json_repair.loads(value)
            return repaired if isinstance(repaired, dict) else {}
    return value if value is not None else {}


def mistral_id(call_id: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9]{9}", call_id):
        return call_id
    return hashlib.sha1(call_id.encode()).hexdigest()[:9]


def to_template_messages(messages: Sequence[Mapping[str, Any]], family: ToolFamily) -> list[dict[str, Any]]:
    """OpenAI-shaped messages -> what HF templates read (arguments as objects, tool names filled in)."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    unanswered: list[str] = []  # ids of the last assistant message's calls that no result answered yet
    fix_id = mistral_id if family is ToolFamily.MISTRAL else (lambda i: i)
    for message in messages:
        msg = dict(message)
        if msg.get("role") == "assistant" and msg.get("tool_calls"):
            calls, unanswered = [], []
            for call in msg["tool_calls"]:
                fn = dict(call.get("function") or {})
                fn["arguments"] = _arguments(fn.get("arguments"))
                call_id = str(call.get("id") or f"call{len(names)}")
                names[call_id] = fn.get("name", "")
                unanswered.append(call_id)
                calls.append({"id": fix_id(call_id), "type": "function", "function": fn})
            msg["tool_calls"] = calls
        elif msg.get("role") == "tool":
            call_id = str(msg.get("tool_call_id") or "")
            if not call_id and unanswered:
                # Ollama's clients send results without ids (the Python client drops tool_call_id, and with
                # it LangChain's): they answer the calls in order, as every API lays them out.
                named = [i for i in unanswered if names[i] == msg.get("name")]
                call_id = (named or unanswered)[0]
            if call_id in unanswered:
                unanswered.remove(call_id)
            if call_id:
                msg["tool_call_id"] = fix_id(call_id)
            if not msg.get("name") and call_id in names:
                msg["name"] = names[call_id]
            msg["content"] = _text(msg.get("content"))
        out.append(msg)
    return out


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    if isinstance(content, (dict, list)):
        return json.dumps(content)
    return "" if content is None else str(content)


def format_calls(calls: Sequence[Mapping[str, Any]], family: ToolFamily) -> str:
    """Calls ({"name", "arguments": dict}) written in the family's own format."""
    if family is ToolFamily.HERMES:
        return "\n".join(
            "<tool_call>\n" + json.dumps({"name": c["name"], "arguments": c["arguments"]}) + "\n</tool_call>"
            for c in calls
        )
    if family is ToolFamily.LLAMA3:
        return "; ".join(json.dumps({"name": c["name"], "parameters": c["arguments"]}) for c in calls)
    return "[TOOL_CALLS]" + json.dumps([{"name": c["name"], "arguments": c["arguments"]} for c in calls])


def fallback_messages(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[ToolSpec], family: ToolFamily
) -> list[dict[str, Any]]:
    """Messages for a template that knows nothing of tools: tools and format in the system
    message, calls and results as plain text."""
    listing = "\n".join(json.dumps(t.to_openai()) for t in tools)
    system = f"You can call these functions:\n{listing}\n\n{_INSTRUCTIONS[family]}"
    out: list[dict[str, Any]] = []
    for msg in to_template_messages(messages, family):
        if msg.get("role") == "assistant" and msg.get("tool_calls"):
            calls = [
                {"name": c["function"].get("name", ""), "arguments": c["function"]["arguments"]}
                for c in msg["tool_calls"]
            ]
            text = _text(msg.get("content"))
            out.append({"role": "assistant", "content": (text + "\n" if text else "") + format_calls(calls, family)})
        elif msg.get("role") == "tool":
            label = msg.get("name") or msg.get("tool_call_id") or "tool"
            out.append({"role": "user", "content": f"Result of {label}:\n{msg['content']}"})
        else:
            out.append(msg)
    if out and out[0].get("role") == "system":
        out[0] = {**out[0], "content": f"{_text(out[0].get('content'))}\n\n{system}"}
    else:
        out.insert(0, {"role": "system", "content": system})
    return out


def render_with_tools(
    tokenizer: Tokenizer,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None,
    family: ToolFamily,
    **kwargs: Any,
) -> str:
    """The prompt text: through the model's template when it renders tools (the tools exactly as the
    client sent them, as transformers renders them), else the fallback."""
    specs = tool_specs(tools)  # raises InvalidRequest on a malformed tool
    if template_supports_tools(tokenizer.chat_template) or _go_template_takes_tools(tokenizer):
        return tokenizer.apply_chat_template(
            to_template_messages(messages, family), tools=template_tools(tools) if specs else None, **kwargs
        )
    if not specs:
        return tokenizer.apply_chat_template(to_template_messages(messages, family), **kwargs)
    return tokenizer.apply_chat_template(fallback_messages(messages, specs, family), **kwargs)
