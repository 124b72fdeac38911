"""ToolRepairer: model text (or upstream calls) -> validated tool calls, repaired where the fix is clear.

Every call ends as one outcome: valid (used as is), repaired (syntax fixed with json-repair, types
coerced, defaults filled, extra keys dropped, name normalized) or failed (with a reason that reads
as a corrective message for a retry). Failed calls keep their text in the content, so no output
is ever dropped silently.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from velollm.tools.tool_coerce import check_arguments, schema_validator
from velollm.tools.tool_parsers import (
    Snippet,
    ToolCall,
    ToolFamily,
    extract_tool_calls,
    new_call_id,
)
from velollm.tools.tool_schema import ToolSpec, tool_specs

logger = logging.getLogger(__name__)

Outcome = Literal["valid", "repaired", "failed"]


@dataclass(frozen=True)
class RepairConfig:
    dedupe: bool = True  # drop exact duplicates (same name and canonical arguments) within one answer
    coerce: bool = True  # "3" -> 3 where the schema says integer, and the other clear cases
    max_calls: int | None = None  # 1 when parallel_tool_calls is false

    def __post_init__(self) -> None:
        if self.max_calls is not None and self.max_calls < 1:
            raise ValueError(f"max_calls must be at least 1, got {self.max_calls}")


@dataclass(frozen=True)
class CallOutcome:
    outcome: Outcome
    call: ToolCall | None  # None when failed
    name: str | None
    reason: str = ""  # failed: what is wrong; repaired: what was fixed
    raw: str = ""


@dataclass(frozen=True)
class RepairResult:
    content: str
    calls: tuple[ToolCall, ...]
    outcomes: tuple[CallOutcome, ...] = ()
    num_duplicates: int = 0
    num_over_limit: int = 0  # calls past max_calls, dropped because the client asked for fewer

    @property
    def failed(self) -> tuple[CallOutcome, ...]:
        return tuple(o for o in self.outcomes if o.outcome == "failed")

    @property
    def ok(self) -> bool:
        return not self.failed

    def corrective_message(self) -> str:
        """A user message asking the model to redo the failed calls ("" when nothing failed)."""
        if not self.failed:
            return ""
        lines = [f"- {o.name or 'tool call'}: {o.reason}" for o in self.failed]
        return (
            "Your previous tool call could not be used:\n"
            + "\n".join(lines)
            + "\nReply again with only the corrected tool call(s), in the same format, using one of the"
            " available tools and arguments that match its JSON schema."
        )


@dataclass
class _Decoded:
    value: Any
    fixes: list[str] = field(default_factory=list)


_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?\s*(```\s*)?$", re.DOTALL)


def decode_json(text: str) -> _Decoded | None:
    """Parse JSON as strictly as possible, then with json-repair; None when nothing is left."""
    fixes: list[str] = []
    fenced = _FENCE.match(text)
    if fenced:
        text, fixes = fenced.group(1), ["removed markdown fence"]
    text = text.strip()
    if not text:
        return None
    try:
        return _Decoded(json.loads(text), fixes)
    except ValueError:
        pass
    values = _json_sequence(text)
    if values is not None:
        return _Decoded(values, fixes)
    import json_repair  # lazily: a dependency of the tool layer only

    try:
        value = json_repair.loads(text)
    except Exception as e:  # noqa: BLE001 (json-repair's failure modes are not typed)
        logger.debug("json-repair failed on %r: %s", text[:200], e)
        return None
    if value in ("", None) or not isinstance(value, (dict, list)):
        return None
    return _Decoded(value, [*fixes, "repaired JSON syntax"])


def _json_sequence(text: str) -> list[Any] | None:
    """Several valid JSON values separated by ';', ',' or whitespace (Llama's parallel calls)."""
    decoder, values, pos = json.JSONDecoder(), [], 0
    while pos < len(text):
        try:
            value, pos = decoder.raw_decode(text, pos)
        except ValueError:
            return None
        values.append(value)
        while pos < len(text) and text[pos] in " \t\r\n;,":
            pos += 1
    return values if len(values) > 1 else None


def _call_fields(obj: Mapping[str, Any]) -> tuple[Any, Any, bool]:
    """(name, arguments, has_arguments) from the call shapes models and APIs use."""
    fn = obj.get("function")
    if isinstance(fn, Mapping):
        obj = fn
    name = obj.get("name", obj.get("tool_name", obj.get("tool", fn if isinstance(fn, str) else None)))
    for key in ("arguments", "parameters", "args", "input"):
        if key in obj:
            return name, obj[key], True
    return name, None, False


def drop_reason(
    call: ToolCall, seen: set[tuple[str, str]], num_kept: int, config: RepairConfig
) -> Literal["duplicate", "surplus"] | None:
    """Why `call` is dropped from an answer that kept `num_kept` calls so far: "duplicate" (same
    name and canonical arguments as a call in `seen`, when deduplicating) or "surplus" (past
    max_calls); None when it is kept, and then its key joins `seen`."""
    key = (call.name, json.dumps(json.loads(call.arguments), sort_keys=True))
    if config.dedupe and key in seen:
        return "duplicate"
    if config.max_calls is not None and num_kept >= config.max_calls:
        return "surplus"
    seen.add(key)
    return None


class ToolRepairer:
    """Turns model output into tool calls for one request's tools (validators built once)."""

    def __init__(
        self,
        tools: Sequence[Mapping[str, Any]] | Sequence[ToolSpec],
        family: ToolFamily = ToolFamily.HERMES,
        config: RepairConfig | None = None,
    ) -> None:
        specs = list(tools) if all(isinstance(t, ToolSpec) for t in tools) else tool_specs(tools)  # type: ignore[arg-type]
        self.tools: dict[str, ToolSpec] = {s.name: s for s in specs}  # type: ignore[union-attr]
        self.family = family
        self.config = config or RepairConfig()
        self._validators: dict[ToolSpec, Any] = {}  # jsonschema validators, built on first use

    def repair_text(self, text: str) -> RepairResult:
        """Extract, repair and validate every call in `text`."""
        extraction = extract_tool_calls(text, self.family)
        outcomes: list[CallOutcome] = []
        consumed: list[Snippet] = []
        for snippet in extraction.snippets:
            found = self.snippet_outcomes(snippet)
            if not snippet.explicit and not any(o.outcome != "failed" for o in found):
                continue  # call-shaped JSON in prose that is no call of ours: it stays content
            if all(o.outcome != "failed" for o in found):
                consumed.append(snippet)
            outcomes.extend(found)
        return self._finish(extraction.content_without(consumed), outcomes)

    def repair_calls(self, calls: Sequence[Mapping[str, Any]], content: str = "") -> RepairResult:
        """Validate calls that arrive already split (an upstream's OpenAI or Ollama `tool_calls`)."""
        outcomes = []
        for call in calls:
            name, args, has_args = _call_fields(call)
            call_id = call.get("id") if isinstance(call.get("id"), str) else None
            outcomes.append(self._outcome(name, args, has_args, [], json.dumps(dict(call)), call_id, upstream=True))
        return self._finish(content, outcomes)

    def snippet_outcomes(self, snippet: Snippet) -> list[CallOutcome]:
        """The outcome of each call in one snippet (an object, or an array of calls)."""
        decoded = decode_json(snippet.text)
        if decoded is None:
            return [CallOutcome("failed", None, None, "the tool call is not valid JSON", snippet.text)]
        items = decoded.value if isinstance(decoded.value, list) else [decoded.value]
        if len(items) == 1 and isinstance(items[0], list):
            items = items[0]
        out = []
        for item in items:
            if not isinstance(item, Mapping):
                out.append(
                    CallOutcome("failed", None, None, "a tool call must be a JSON object with a name", snippet.text)
                )
                continue
            name, args, has_args = _call_fields(item)
            out.append(self._outcome(name, args, has_args, list(decoded.fixes), snippet.text))
        return out

    def _outcome(
        self,
        name: Any,
        args: Any,
        has_args: bool,
        fixes: list[str],
        raw: str,
        call_id: str | None = None,
        upstream: bool = False,
    ) -> CallOutcome:
        def failed(reason: str) -> CallOutcome:
            return CallOutcome("failed", None, name if isinstance(name, str) else None, reason, raw)

        if not isinstance(name, str) or not name.strip():
            return failed("the tool call has no function name")
        spec, fixed_name = self._resolve(name)
        if spec is None:
            available = ", ".join(sorted(self.tools)) or "none"
            return failed(f"unknown tool {name!r}; available tools: {available}")
        if fixed_name:
            fixes.append(f"tool name {name!r} -> {spec.name!r}")
        if not has_args or args is None:
            args = {}
        if isinstance(args, str):
            decoded = decode_json(args) if args.strip() else _Decoded({})
            if decoded is None or not isinstance(decoded.value, dict):
                return failed("arguments must be a JSON object")
            args = decoded.value
            # A JSON string is the OpenAI wire shape; inside model text it is double encoding.
            fixes.extend(decoded.fixes if upstream else [*decoded.fixes, "decoded arguments given as a string"])
        if not isinstance(args, dict):
            return failed(f"arguments must be a JSON object, got {type(args).__name__}")
        args, arg_fixes, errors = check_arguments(args, spec.parameters, self.config.coerce, self._validator(spec))
        if errors:
            return failed("; ".join(errors))
        fixes.extend(arg_fixes)
        call = ToolCall(spec.name, json.dumps(args, ensure_ascii=False), call_id or new_call_id(self.family))
        return CallOutcome("repaired" if fixes else "valid", call, spec.name, "; ".join(fixes), raw)

    def _validator(self, spec: ToolSpec) -> Any:
        validator = self._validators.get(spec)
        if validator is None:
            validator = self._validators[spec] = schema_validator(spec.parameters)
        return validator

    def _resolve(self, name: str) -> tuple[ToolSpec | None, bool]:
        if name in self.tools:
            return self.tools[name], False
        stripped = name.strip().removeprefix("functions.")
        if stripped in self.tools:
            return self.tools[stripped], True
        folded = [s for n, s in self.tools.items() if n.lower() == stripped.lower()]
        return (folded[0], True) if len(folded) == 1 else (None, False)

    def _finish(self, content: str, outcomes: list[CallOutcome]) -> RepairResult:
        calls: list[ToolCall] = []
        seen: set[tuple[str, str]] = set()
        kept: list[CallOutcome] = []
        num_duplicates = num_over = 0
        for o in outcomes:
            if o.call is not None:
                verdict = drop_reason(o.call, seen, len(calls), self.config)
                if verdict == "duplicate":
                    num_duplicates += 1
                    continue
                if verdict == "surplus":
                    num_over += 1
                    continue
                calls.append(o.call)
            kept.append(o)
        if num_duplicates or num_over:
            logger.info("dropped %d duplicate and %d surplus tool calls", num_duplicates, num_over)
        return RepairResult(content, tuple(calls), tuple(kept), num_duplicates, num_over)
