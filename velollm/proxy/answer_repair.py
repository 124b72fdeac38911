"""AnswerRepair: an upstream's tool calls repaired against the client's tools, as native answers are.

Upstreams (Ollama, llama.cpp, vLLM) send malformed calls (trailing commas, single quotes, "3" for an
integer), calls to tools that were never offered, and calls leaked into the content text (fenced
JSON, `<tool_call>` markers). Every chat answer to a request with `tools` goes through the same
ToolRepairer as a native answer: usable calls go out repaired, a call that cannot be used goes back
into the content (never dropped), and OpenAI's finish_reason is "tool_calls" exactly when calls go out.

Streams: Ollama sends each call whole in one line, so each is repaired as it passes; an OpenAI stream
sends argument fragments, so its calls are held back until their choice finishes and go out whole,
repaired (sse_repair.py). Streamed text cannot be taken back, so calls leaked into streamed content
stay content.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from velollm.errors import InvalidRequest
from velollm.proxy.ollama_via_openai import RAW_ARGUMENTS
from velollm.tools.tool_parsers import ToolCall, ToolFamily
from velollm.tools.tool_repair import RepairConfig, RepairResult, ToolRepairer
from velollm.tools.tool_schema import tool_specs

logger = logging.getLogger(__name__)

REPAIRED_PATHS = ("/v1/chat/completions", "/api/chat")
_MISTRAL_NAMES = ("mistral", "mixtral", "ministral", "devstral", "magistral")


def family_for_model(name: str) -> ToolFamily:
    """The upstream's chat template is unknown here: its model name is the best hint. Every family
    parser also recognises the other families' markers, so a wrong guess costs little."""
    base = name.lower().rsplit("/", 1)[-1]
    if any(m in base for m in _MISTRAL_NAMES):
        return ToolFamily.MISTRAL
    if "llama" in base:
        return ToolFamily.LLAMA3
    return ToolFamily.HERMES


class AnswerRepair:
    """Repairs the tool calls of one upstream chat answer (whole, or streamed Ollama lines)."""

    def __init__(self, repairer: ToolRepairer, on_outcome: Callable[[str], None] | None = None) -> None:
        self.repairer = repairer
        self.on_outcome = on_outcome

    @classmethod
    def for_request(cls, path: str, body: Any, on_outcome: Callable[[str], None] | None = None) -> AnswerRepair | None:
        """None when the request is no chat request with tools (its answer then passes unchanged)."""
        if path not in REPAIRED_PATHS or not isinstance(body, dict):
            return None
        tools = body.get("tools")
        if not tools or not isinstance(tools, list) or body.get("tool_choice") == "none":
            return None
        try:
            specs = tool_specs(tools)
        except InvalidRequest as exc:  # the upstream judges tools VeloLLM cannot read
            logger.info("upstream tool calls not repaired: %s", exc)
            return None
        config = RepairConfig(max_calls=1 if body.get("parallel_tool_calls") is False else None)
        return cls(ToolRepairer(specs, family_for_model(str(body.get("model") or "")), config), on_outcome)

    # --- the two wire shapes --------------------------------------------------------------------

    def openai_answer(self, answer: dict[str, Any]) -> dict[str, Any]:
        """A chat.completion object with its choices' calls repaired."""
        choices, changed = [], False
        for choice in answer.get("choices") or []:
            message = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(message, dict):
                choices.append(choice)
                continue
            result = self._repair(message.get("content") or "", message.get("tool_calls") or [], whole=True)
            if result is None:
                choices.append(choice)
                continue
            content, calls = result
            # (llama-cpp-python's server adds a function_call copy of the first call, arguments unrepaired: a
            # client that sends the message back as history would send both forms; legacy requests get theirs
            # back from the repaired calls, proxy/legacy_answer.py)
            message = {k: v for k, v in message.items() if k not in ("tool_calls", "function_call")}
            # OpenAI sends content null next to tool calls when the model wrote nothing else.
            message["content"] = content or (None if calls else "")
            if calls:
                message["tool_calls"] = [call.to_openai() for call in calls]
            finish = "tool_calls" if calls else _no_calls_reason(choice.get("finish_reason"))
            choices.append({**choice, "message": message, "finish_reason": finish})
            changed = True
        return {**answer, "choices": choices} if changed else answer

    def ollama_answer(self, obj: dict[str, Any], *, whole: bool) -> dict[str, Any]:
        """An /api/chat object with its calls repaired. `whole`: the complete answer (calls leaked into
        the content are taken out too); else one streamed line (only its calls are repaired)."""
        message = obj.get("message")
        if not isinstance(message, dict):
            return obj
        calls = message.get("tool_calls") or []
        if not calls and not whole:
            return obj
        result = self._repair(message.get("content") or "", calls, whole=whole)
        if result is None:
            return obj
        content, repaired = result
        upstream_ids = {c.get("id") for c in calls if isinstance(c, Mapping)}
        message = {k: v for k, v in message.items() if k != "tool_calls"}
        message["content"] = content
        if repaired:
            message["tool_calls"] = [_ollama_call(call, i, call.id in upstream_ids) for i, call in enumerate(repaired)]
        return {**obj, "message": message}

    def repair_calls(self, calls: Sequence[Mapping[str, Any]]) -> tuple[str, tuple[ToolCall, ...]] | None:
        """OpenAI-shaped calls gathered from a stream: (content for calls that cannot be used, usable
        calls repaired), or None when they need no repair."""
        return self._repair("", calls, whole=False)

    # --- bytes, for the pass-through paths ------------------------------------------------------

    def json_body(self, data: bytes, api: str) -> bytes:
        """A whole answer's body, repaired; anything that is no answer passes unchanged."""
        try:
            obj = json.loads(data)
        except ValueError:
            return data
        if not isinstance(obj, dict) or "error" in obj:
            return data
        fixed = self.openai_answer(obj) if api == "openai" else self.ollama_answer(obj, whole=True)
        return data if fixed is obj else json.dumps(fixed, ensure_ascii=False).encode()

    def ndjson_chunk(self, chunk: bytes) -> bytes:
        """Whole NDJSON lines of an Ollama stream; only the lines that carry calls are rewritten."""
        if b'"tool_calls"' not in chunk:
            return chunk
        lines = []
        for line in chunk.splitlines(keepends=True):
            try:
                obj = json.loads(line) if line.strip() else None
            except ValueError:
                obj = None
            if isinstance(obj, dict) and "error" not in obj:
                fixed = self.ollama_answer(obj, whole=False)
                if fixed is not obj:
                    line = json.dumps(fixed, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
            lines.append(line)
        return b"".join(lines)

    # --- shared ---------------------------------------------------------------------------------

    def _repair(self, content: str, calls: Sequence[Any], *, whole: bool) -> tuple[str, tuple[ToolCall, ...]] | None:
        """(content, calls) after repair; None when there was nothing to repair."""
        if not isinstance(content, str):
            return None
        if calls:
            # A server that parsed calls out has taken them out of the content already.
            result = self.repairer.repair_calls([_unwrapped(c) for c in calls if isinstance(c, Mapping)], content)
        elif whole and content:
            result = self.repairer.repair_text(content)
        else:
            return None
        if not result.outcomes and result.content == content:
            return None
        self._count(result)
        if calls and result.failed:  # a call that cannot be used is shown as text, never dropped
            content = "\n".join(p for p in [result.content, *(o.raw for o in result.failed)] if p)
        else:
            content = result.content
        return content, result.calls

    def _count(self, result: RepairResult) -> None:
        if self.on_outcome is None:
            return
        for outcome in result.outcomes:
            self.on_outcome(outcome.outcome)


def _unwrapped(call: Mapping[str, Any]) -> Mapping[str, Any]:
    """The arguments text that the OpenAI -> Ollama conversion wrapped because it was no JSON."""
    function = call.get("function")
    args = function.get("arguments") if isinstance(function, Mapping) else None
    if isinstance(args, dict) and list(args) == [RAW_ARGUMENTS] and isinstance(args[RAW_ARGUMENTS], str):
        return {**call, "function": {**function, "arguments": args[RAW_ARGUMENTS]}}
    return call


def _ollama_call(call: ToolCall, index: int, keep_id: bool) -> dict[str, Any]:
    return call.to_ollama(index, with_id=keep_id)  # Ollama ids are optional: keep the upstream's own, invent none


def _no_calls_reason(reason: Any) -> Any:
    return "stop" if reason in ("tool_calls", "function_call") else reason
