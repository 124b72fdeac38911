"""Tool-call families and the extraction of tool-call regions from model text.

Extraction only locates the text of each call (it does not judge it): `tool_repair` turns the
snippets into validated calls. Each family has its own markers, but models drift between formats
(Qwen emitting bare JSON, Llama emitting `<tool_call>`), so every family also recognises the
others' markers and, last, bare call-shaped JSON.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class ToolFamily(str, Enum):
    LLAMA3 = "llama3_json"  # {"name": ..., "parameters": ...}, optional <|python_tag|>, ';'-separated
    HERMES = "hermes"  # <tool_call>{"name": ..., "arguments": ...}</tool_call> (Qwen2.5/Qwen3, Hermes)
    MISTRAL = "mistral"  # [TOOL_CALLS][{"name": ..., "arguments": ...}, ...] or [TOOL_CALLS]name[ARGS]{...}


PYTHON_TAG = "<|python_tag|>"
HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
MISTRAL_MARKER = "[TOOL_CALLS]"
# End-of-turn tokens that survive when special tokens are kept for tool parsing.
_TRAILING_SPECIALS = re.compile(r"(<\|eom_id\|>|<\|eot_id\|>|<\|im_end\|>|</s>|<\|end_of_text\|>)\s*$")

_MODEL_TYPE_FAMILY = {
    "llama": ToolFamily.LLAMA3,
    "llama4": ToolFamily.LLAMA3,
    "mistral": ToolFamily.MISTRAL,
    "mixtral": ToolFamily.MISTRAL,
    "ministral": ToolFamily.MISTRAL,
    "mistral3": ToolFamily.MISTRAL,
}


def detect_family(chat_template: str | dict[str, str] | None = None, model_type: str | None = None) -> ToolFamily:
    """The tool-call format a model was trained on: its chat template's markers decide, then model_type.

    Hermes is the default: it is the most widespread format and the one the fallback prompt teaches.
    """
    if isinstance(chat_template, dict):
        chat_template = chat_template.get("tool_use") or chat_template.get("default") or ""
    template = chat_template or ""
    if HERMES_OPEN in template:
        return ToolFamily.HERMES
    if MISTRAL_MARKER in template:
        return ToolFamily.MISTRAL
    if PYTHON_TAG in template or ("<|start_header_id|>" in template and "tools" in template):
        return ToolFamily.LLAMA3
    if model_type:
        return _MODEL_TYPE_FAMILY.get(model_type.lower(), ToolFamily.HERMES)
    return ToolFamily.HERMES


_ID_ALPHABET = string.ascii_letters + string.digits


def new_call_id(family: ToolFamily | None = None) -> str:
    """A fresh tool-call id; Mistral templates require exactly 9 alphanumerics."""
    if family is ToolFamily.MISTRAL:
        return "".join(secrets.choice(_ID_ALPHABET) for _ in range(9))
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


@dataclass(frozen=True)
class ToolCall:
    """One call as the API returns it: `arguments` is a JSON object serialized as a string."""

    name: str
    arguments: str
    id: str = field(default_factory=new_call_id)

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}

    def to_ollama(self, index: int, with_id: bool = True) -> dict[str, Any]:
        """As Ollama (v0.12.10+) sends a call: its id, then the function with the call's index in the answer
        (from 0, across the stream's chunks) and the arguments as an object (ValueError if they are no JSON)."""
        function = {"index": index, "name": self.name, "arguments": json.loads(self.arguments)}
        return {"id": self.id, "function": function} if with_id else {"function": function}


@dataclass(frozen=True)
class Snippet:
    """The raw text of one call, or of one array of calls.

    explicit: a tool-call marker (or the family's own bare-JSON convention) introduced it, so a
    broken snippet is a broken call; implicit snippets (call-shaped JSON inside prose) that turn
    out not to be calls go back to the content.
    """

    text: str
    explicit: bool
    start: int
    end: int


@dataclass(frozen=True)
class Extraction:
    text: str  # the model text, trailing end-of-turn tokens removed; snippet offsets index it
    snippets: tuple[Snippet, ...]

    def content_without(self, snippets: list[Snippet] | tuple[Snippet, ...]) -> str:
        """The text with `snippets` (and fences left empty around them) removed."""
        parts, pos = [], 0
        for s in sorted(snippets, key=lambda s: s.start):
            parts.append(self.text[pos : s.start])
            pos = s.end
        parts.append(self.text[pos:])
        content = _EMPTY_FENCE.sub("", "".join(parts)) if snippets else self.text
        return content.strip(" \t\r\n;,") if snippets else content

    @property
    def content(self) -> str:
        return self.content_without(self.snippets)


def json_span_end(text: str, start: int) -> int:
    """End (exclusive) of the JSON object/array opening at `start`; len(text) if it never closes."""
    return json_span(text, start)[0]


def json_span(text: str, start: int) -> tuple[int, bool]:
    """(end, closed) of the JSON object/array opening at `start`.

    String-aware bracket counting that tolerates single-quoted strings (a common model slip).
    """
    end = JsonScan(start).advance(text)
    return (end, True) if end is not None else (len(text), False)


class JsonScan:
    """A resumable, string-aware bracket scan of JSON text from `start` (the scan of `json_span`).

    `advance` goes over the text not seen yet, so a growing buffer is scanned once in all. Bracket
    counting only: `depth` counts every bracket, `closers` the characters that would close the
    brackets still open, `quote` the string open at the end. single_quotes: a ' after JSON
    punctuation opens a string too; stop: the scan ends at the bracket that closes depth 0.
    """

    __slots__ = ("closers", "depth", "end", "escaped", "pos", "quote", "single_quotes", "start", "stop")

    def __init__(self, start: int = 0, *, single_quotes: bool = True, stop: bool = True) -> None:
        self.start = self.pos = start
        self.depth = 0
        self.closers: list[str] = []
        self.quote, self.escaped = "", False
        self.end: int | None = None  # set once the value closed (with stop)
        self.single_quotes, self.stop = single_quotes, stop

    def advance(self, text: str) -> int | None:
        """Scan `text` (the same text as before, maybe longer) up to its end; the end (exclusive) of
        the value once it closed, else None."""
        if self.end is not None:
            return self.end
        depth, closers, quote, escaped = self.depth, self.closers, self.quote, self.escaped
        i, n = self.pos, len(text)
        while i < n:
            ch = text[i]
            if quote:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == quote:
                    quote = ""
            elif ch == '"' or (ch == "'" and self.single_quotes and _opens_single_quote(text, i)):
                quote = ch
            elif ch in "{[":
                depth += 1
                closers.append("}" if ch == "{" else "]")
            elif ch in "}]":
                depth -= 1
                if closers:
                    closers.pop()
                if depth == 0 and self.stop:
                    self.end = i + 1
                    i += 1
                    break
            i += 1
        self.pos, self.depth, self.quote, self.escaped = i, depth, quote, escaped
        return self.end


def _opens_single_quote(text: str, i: int) -> bool:
    # Apostrophes inside prose-like values ("it's") must not open a string: only a quote that
    # follows JSON punctuation does.
    j = i - 1
    while j >= 0 and text[j] in " \t\r\n":
        j -= 1
    return j >= 0 and text[j] in "{[,:"


# A call object begins with one of these keys (quoted with " or ', or bare).
_CALL_START = re.compile(r"""\{\s*(?P<q>["']?)(name|function|type|tool_name|tool)(?P=q)\s*:""")
_CALL_ARRAY_START = re.compile(r"""\[\s*\{\s*(?P<q>["']?)(name|function|type|tool_name|tool)(?P=q)\s*:""")


def _call_spans(text: str, offset: int, explicit: bool) -> list[Snippet]:
    """Call-shaped JSON values in `text` (objects or arrays of objects), left to right."""
    out, i = [], 0
    while i < len(text):
        match = _CALL_START.match(text, i) or _CALL_ARRAY_START.match(text, i)
        if match is None:
            i += 1
            continue
        end = json_span_end(text, i)
        out.append(Snippet(text[i:end], explicit, offset + i, offset + end))
        i = end
    return out


def _hermes(text: str) -> list[Snippet]:
    out, pos = [], 0
    while (start := text.find(HERMES_OPEN, pos)) != -1:
        body = start + len(HERMES_OPEN)
        end = _json_body_end(text, body)  # markers inside the call's strings are text
        close = text.find(HERMES_CLOSE, end)
        nxt = text.find(HERMES_OPEN, end)
        if close == -1 or (nxt != -1 and nxt < close):
            end = nxt if nxt != -1 else len(text)
            out.append(Snippet(text[body:end], True, start, end))
            pos = end
        else:
            out.append(Snippet(text[body:close], True, start, close + len(HERMES_CLOSE)))
            pos = close + len(HERMES_CLOSE)
    return out


def _json_body_end(text: str, start: int) -> int:
    """Where the JSON value that follows `start` (after whitespace or a fence) ends; `start` when
    none follows or it does not close."""
    m = _FENCE_OPEN.match(text, start)
    i = m.end() if m else start
    if i < len(text) and text[i] in "{[":
        end, closed = json_span(text, i)
        if closed:
            return end
    return start


_MISTRAL_NAMED = re.compile(r"\s*([A-Za-z0-9_.\-]+)\s*(?:\[CALL_ID\]\s*[A-Za-z0-9]+\s*)?\[ARGS\]")


def _mistral(text: str) -> list[Snippet]:
    out = []
    pos = 0
    while (found := text.find(MISTRAL_MARKER, pos)) != -1:
        m_end = found + len(MISTRAL_MARKER)
        end = text.find(MISTRAL_MARKER, _json_body_end(text, m_end))
        end = len(text) if end == -1 else end
        body = text[m_end:end]
        named = _MISTRAL_NAMED.match(body)
        if named:  # v11 tokenizer: [TOOL_CALLS]name[ARGS]{...}
            args = body[named.end() :].strip()
            body = f'{{"name": {json.dumps(named.group(1))}, "arguments": {args or "{}"}}}'
        out.append(Snippet(body, True, found, end))
        pos = end
    return out


def _python_tag(text: str) -> list[Snippet]:
    tag = text.find(PYTHON_TAG)
    if tag == -1:
        return []
    body_start = tag + len(PYTHON_TAG)
    spans = _call_spans(text[body_start:], body_start, explicit=True)
    if spans:
        return [Snippet(s.text, True, tag if k == 0 else s.start, s.end) for k, s in enumerate(spans)]
    return [Snippet(text[body_start:], True, tag, len(text))]


def _bare(text: str) -> list[Snippet]:
    # Llama's convention is an answer that *is* the JSON (possibly fenced, several calls separated
    # by ';' or newlines): those calls are explicit; JSON further inside prose is not.
    out, pos, chained = [], _strip_fence_open(text), True
    for s in _call_spans(text, 0, explicit=False):
        chained = chained and not text[pos : s.start].strip(" \t\r\n;,")
        out.append(Snippet(s.text, chained, s.start, s.end))
        pos = s.end
    return out


def _strip_fence_open(text: str) -> int:
    m = _FENCE_OPEN.match(text)
    return m.end() if m else 0


_MARKER_EXTRACTORS = {ToolFamily.HERMES: _hermes, ToolFamily.MISTRAL: _mistral, ToolFamily.LLAMA3: _python_tag}


def extract_tool_calls(text: str, family: ToolFamily) -> Extraction:
    """Split model output into content and tool-call snippets: markers first (the family's own,
    then the others), bare call-shaped JSON last."""
    text = _TRAILING_SPECIALS.sub("", text)
    snippets = _MARKER_EXTRACTORS[family](text)
    if not snippets and family is ToolFamily.LLAMA3:
        # An answer that starts with the JSON is Llama's own format: other families' markers
        # further on are inside its strings.
        snippets = [s for s in _bare(text) if s.explicit]
    for fam in (f for f in ToolFamily if f is not family):
        if snippets:
            break
        snippets = _MARKER_EXTRACTORS[fam](text)
    if snippets:
        return Extraction(text, tuple(snippets))
    snippets = _bare(text)
    if family is not ToolFamily.LLAMA3:
        # In another family's output, bare JSON is only a call by accident (Ollama-style leaks).
        snippets = [Snippet(s.text, False, s.start, s.end) for s in snippets]
    return Extraction(text, tuple(snippets))


_EMPTY_FENCE = re.compile(r"```[a-zA-Z]*\s*```")
_FENCE_OPEN = re.compile(r"\s*(```[a-zA-Z]*\s*)?")
