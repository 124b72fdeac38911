"""An OpenAI chat stream from an OpenAI-compatible upstream, with its tool calls repaired.

Content passes through as it comes. Tool-call fragments are held back per choice; when the choice
finishes (its finish_reason) or the stream ends, the calls go through the same AnswerRepair as whole
answers and are sent whole, one delta holding them all, just before the finishing chunk, whose
finish_reason is "tool_calls" exactly when calls go out. A call that cannot be used goes out as
content text, never dropped. Events this has nothing to change pass byte for byte.
"""

from __future__ import annotations

import json
from typing import Any

from velollm.proxy.answer_repair import AnswerRepair
from velollm.wire.framing import sse_data, sse_event

_ENVELOPE = ("id", "object", "created", "model", "system_fingerprint")


class OpenAIStreamRepair:
    def __init__(self, repair: AnswerRepair) -> None:
        self.repair = repair
        self.calls: dict[int, dict[int, dict[str, str]]] = {}  # choice -> call index -> id, name, arguments
        self.envelope: dict[str, Any] = {}  # of the last chunk: synthesized chunks carry the same

    def chunk(self, data: bytes) -> bytes:
        """Whole SSE events in (as the relay hands them), the same events out, rewritten where needed."""
        if b'"tool_calls"' not in data and not self.calls:
            return data
        events = data.replace(b"\r\n", b"\n").split(b"\n\n")
        out = [self._event(e) for e in events[:-1]]
        return b"".join(out) + events[-1]

    def finish(self) -> bytes:
        """At the end of the stream: calls whose choice never finished go out (a broken upstream)."""
        return b"".join(self._flush(index, "tool_calls") for index in list(self.calls))

    def _event(self, event: bytes) -> bytes:
        raw = event + b"\n\n"
        data = sse_data(event)
        if data == b"[DONE]":
            return self.finish() + raw
        try:
            obj = json.loads(data) if data else None
        except ValueError:
            return raw
        if not isinstance(obj, dict) or "error" in obj or not isinstance(obj.get("choices"), list):
            return raw
        self.envelope = {k: obj[k] for k in _ENVELOPE if k in obj}
        changed, before, choices = False, [], []
        for choice in obj["choices"]:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                choices.append(choice)
                continue
            index = int(choice.get("index") or 0)
            finish = choice.get("finish_reason")
            if isinstance(delta.get("tool_calls"), list):
                self._hold(index, delta["tool_calls"])
                delta = {k: v for k, v in delta.items() if k != "tool_calls"}
                changed = True
            if "function_call" in delta:  # llama-cpp-python's copy of the calls (see AnswerRepair.openai_answer)
                delta = {k: v for k, v in delta.items() if k != "function_call"}
                changed = True
            if finish is not None and index in self.calls:
                calls_chunk, finish = self._repaired(index, finish)
                before.append(calls_chunk)
                changed = True
            if delta or finish is not None or choice.get("logprobs"):
                choices.append({**choice, "delta": delta, "finish_reason": finish})
        if not changed:
            return raw
        rewritten = b"" if not choices and obj["choices"] else sse_event({**obj, "choices": choices})
        return b"".join(before) + rewritten

    def _hold(self, index: int, fragments: list[Any]) -> None:
        calls = self.calls.setdefault(index, {})
        for fragment in fragments:
            if not isinstance(fragment, dict):
                continue
            call = calls.setdefault(int(fragment.get("index") or 0), {"id": "", "name": "", "arguments": ""})
            function = fragment.get("function") if isinstance(fragment.get("function"), dict) else {}
            call["id"] = call["id"] or str(fragment.get("id") or "")
            name = str(function.get("name") or "")
            if name != call["name"]:  # llama-cpp-python repeats the whole name in every fragment
                call["name"] += name
            call["arguments"] += str(function.get("arguments") or "")

    def _repaired(self, index: int, finish: Any) -> tuple[bytes, Any]:
        """The chunk with choice `index`'s calls (repaired), and the finish_reason that goes with them."""
        held = self.calls.pop(index)
        calls = [{"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                 for _, c in sorted(held.items())]
        result = self.repair.repair_calls(calls)
        if result is None:  # nothing to repair: as they came, whole
            content, out = "", [{"index": i, **call} for i, call in enumerate(calls)]
        else:
            content, repaired = result
            out = [{"index": i, **call.to_openai()} for i, call in enumerate(repaired)]
        delta: dict[str, Any] = {}
        if content:
            delta["content"] = content
        if out:
            delta["tool_calls"] = out
        reason = "tool_calls" if out else ("stop" if finish in ("tool_calls", "function_call") else finish)
        chunk = sse_event({**self.envelope, "choices": [{"index": index, "delta": delta, "finish_reason": None}]})
        return (chunk if delta else b""), reason

    def _flush(self, index: int, finish: str) -> bytes:
        chunk, reason = self._repaired(index, finish)
        return chunk + sse_event({**self.envelope, "choices": [{"index": index, "delta": {}, "finish_reason": reason}]})
