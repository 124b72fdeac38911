"""StreamingToolParser: text deltas in, OpenAI-style content and tool-call deltas out.

Per call it sends the id, type, name and `"arguments": ""` first (as OpenAI does), then argument
fragments that concatenate to the arguments JSON (`{}` for a call without arguments). Text that may be the start of a marker is held
back until it is known not to be one.

Two modes. incremental (constrained decoding: the grammar guarantees the arguments parse and
validate): argument text is forwarded as it arrives. buffered (free text, e.g. an upstream model):
each call is repaired and validated when it completes and sent whole; a call that fails goes out as
content, so nothing is dropped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import regex

from velollm.tools.tool_parsers import (
    HERMES_CLOSE,
    HERMES_OPEN,
    MISTRAL_MARKER,
    PYTHON_TAG,
    JsonScan,
    Snippet,
    ToolCall,
    ToolFamily,
    new_call_id,
)
from velollm.tools.tool_repair import CallOutcome, ToolRepairer, drop_reason

logger = logging.getLogger(__name__)

_LITERAL_MARKERS = [HERMES_OPEN, MISTRAL_MARKER, PYTHON_TAG]
# Llama 3.x calls often start bare: the object itself is the marker.
_BARE_CALL = r"""\{\s*["']?name["']?\s*:"""
_FENCE = regex.compile(r"```[a-zA-Z]*")
_NAME_HEAD = regex.compile(r'\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*')
_ARGS_KEY = regex.compile(r',\s*"(?:arguments|parameters)"\s*:\s*')
_MISTRAL_NAMED = regex.compile(r"\s*([A-Za-z0-9_.\-]+)\s*(?:\[CALL_ID\]\s*[A-Za-z0-9]+\s*)?\[ARGS\]\s*")
_SEPARATORS = " \t\r\n,;"
_END_TOKENS = ("<|eom_id|>", "<|eot_id|>", "<|im_end|>", "</s>", "<|end_of_text|>")


@dataclass(frozen=True)
class ToolCallDelta:
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str | None = None

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index}
        function: dict[str, Any] = {}
        if self.id is not None:
            out.update(id=self.id, type="function")
        if self.name is not None:
            function["name"] = self.name
        if self.arguments is not None:
            function["arguments"] = self.arguments
        out["function"] = function
        return out


@dataclass(frozen=True)
class StreamDelta:
    content: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.content or self.tool_calls)


class StreamingToolParser:
    """Feed model text deltas with `feed`, then call `finish` once at the end of the stream."""

    def __init__(self, family: ToolFamily, repairer: ToolRepairer, *, incremental: bool = True) -> None:
        self.family = family
        self.repairer = repairer
        self.incremental = incremental
        markers = [regex.escape(m) for m in _LITERAL_MARKERS]
        # Bare call-shaped JSON: Llama's own format; in other families only buffered mode looks for
        # it (Ollama-style leaks), since it can put JSON that is no call back into the content.
        if family is ToolFamily.LLAMA3 or not incremental:
            markers.append(_BARE_CALL)
        self._marker = regex.compile("|".join(markers))
        self._buf = ""
        self._pos = 0  # everything before it has been emitted or consumed
        self._in_region = False  # after a marker: expecting call objects
        self._call: _OpenCall | None = None
        self._after_calls = False
        self._implicit = False  # the region began with bare JSON in a family that does not use it
        self._region_start = self._region_calls = 0
        self._seen: set[tuple[str, str]] = set()
        self.num_duplicates = 0
        self._num_indices = 0  # tool-call indices handed out (a failed call may hold one)
        self.calls: list[ToolCall] = []
        self.outcomes: list[CallOutcome] = []
        self.num_cut = 0  # calls cut short where no repair makes one of their schema (in `calls`, not calls made)

    @property
    def has_tool_calls(self) -> bool:
        """True once a call went out whole: finish_reason must then be "tool_calls"."""
        return len(self.calls) > self.num_cut

    def feed(self, text: str) -> StreamDelta:
        self._buf += text
        return self._advance(final=False)

    def finish(self) -> StreamDelta:
        return self._advance(final=True)

    def _advance(self, final: bool) -> StreamDelta:
        content: list[str] = []
        deltas: list[ToolCallDelta] = []
        while True:
            if self._call is not None:
                if not self._step_call(deltas, content, final):
                    break
            elif self._in_region:
                if not self._step_region(content, final):
                    break
            elif not self._step_content(content, final):
                break
        return StreamDelta("".join(content), tuple(deltas))

    def _step_content(self, content: list[str], final: bool) -> bool:
        if self._after_calls:
            # Whitespace between and after calls is formatting, not content.
            while self._pos < len(self._buf) and self._buf[self._pos] in _SEPARATORS:
                self._pos += 1
            if self._pos == len(self._buf):
                return False
            self._after_calls = False
        m = self._marker.search(self._buf, self._pos, partial=not final)
        if m is None:
            content.append(self._buf[self._pos :])
            self._pos = len(self._buf)
            return False
        content.append(self._buf[self._pos : m.start()])
        self._pos = m.start()
        if m.partial:
            return False  # maybe a marker: wait for more text
        self._in_region = True
        self._region_start, self._region_calls = m.start(), 0
        self._implicit = m.group().startswith("{") and self.family is not ToolFamily.LLAMA3
        if not m.group().startswith("{"):
            self._pos = m.end()  # a bare object is the call itself: keep it
        return True

    def _leave_region(self, content: list[str]) -> None:
        """Back to content; a marker that introduced no call is a failed call, shown as text."""
        self._in_region = False
        if self._region_calls == 0 and not self._implicit:
            content.append(self._buf[self._region_start : self._pos])
            self.outcomes.append(
                CallOutcome("failed", None, None, "the tool call is not valid JSON", self._buf[self._region_start :])
            )

    def _step_region(self, content: list[str], final: bool) -> bool:
        buf, i = self._buf, self._pos
        while i < len(buf) and buf[i] in _SEPARATORS + "[]":
            i += 1
        self._pos = i
        if i == len(buf):
            if final:
                self._leave_region(content)
            return False
        rest = buf[i:]
        fence = _FENCE.match(buf, i, partial=not final)
        if fence is not None:
            if fence.partial or (fence.end() == len(buf) and not final):
                return False  # the language tag may go on
            self._pos = fence.end()
            return True
        if rest.startswith(HERMES_CLOSE):
            self._pos += len(HERMES_CLOSE)
            self._in_region = False
            self._after_calls = True
            return True
        for token in _END_TOKENS:
            if rest.startswith(token):
                self._pos += len(token)
                return True
            if not final and token.startswith(rest):
                return False
        if buf[i] == "{":
            self._call = _OpenCall(start=i)
            return True
        named = _MISTRAL_NAMED.match(buf, i, partial=not final)
        if named is not None and not named.partial:
            self._call = _OpenCall(start=named.end(), name=named.group(1), args_start=named.end(), bare_args=True)
            return True
        if named is not None or (not final and len(rest) < len(HERMES_CLOSE) and HERMES_CLOSE.startswith(rest)):
            return False
        self._leave_region(content)  # plain text after the calls: content again
        return True

    def _step_call(self, deltas: list[ToolCallDelta], content: list[str], final: bool) -> bool:
        call = self._call
        assert call is not None
        buf = self._buf
        found = call.scan.advance(buf)  # resumes where the last delta left off
        end, closed = (found, True) if found is not None else (len(buf), False)
        if self.incremental and (call.index is not None or not self.calls):
            # Only the answer's first call streams piece by piece; later ones go out whole when they
            # close, so that a repeat of an earlier call is dropped here as in a whole answer.
            self._stream_pieces(call, deltas, closed)
        if not closed and not final:
            return False
        obj_end = end if closed else len(buf)
        self._complete(call, buf[call.start : obj_end], deltas, content, truncated=not closed)
        self._region_calls += 1
        self._call = None
        self._pos = obj_end
        if not closed:
            self._in_region = False
        return True

    def _stream_pieces(self, call: _OpenCall, deltas: list[ToolCallDelta], closed: bool) -> None:
        buf = self._buf
        if call.name is None:
            head = _NAME_HEAD.match(buf, call.start)
            if head is None:
                return  # not the usual shape (yet): decided when the object closes
            call.name = json.loads(f'"{head.group(1)}"')
            if call.name not in self.repairer.tools:
                call.name, call.args_start = None, None
                return  # an unknown name is judged (and refused) whole when the object closes
            args = _ARGS_KEY.match(buf, head.end())
            if args is not None:
                call.args_start = args.end()
            elif not closed:
                call.name = None  # the arguments key may still come
                return
        if call.index is None:
            call.id = new_call_id(self.family)
            call.index = self._new_index()
            # As OpenAI's first chunk of a call: id, type, name and an empty arguments string.
            deltas.append(ToolCallDelta(call.index, id=call.id, name=call.name, arguments=""))
        if call.args_start is None:
            return
        while call.args_sent == 0 and call.args_start < len(buf) and buf[call.args_start] in " \t\r\n":
            call.args_start += 1  # the key was matched before the whitespace after it arrived
        if call.args_start >= len(buf):
            return
        if buf[call.args_start] != "{":
            call.args_start = None if call.bare_args else call.args_start
            return  # arguments as a string or scalar: decoded whole when the call closes
        if call.args_scan is None or call.args_scan.start != call.args_start:
            call.args_scan = JsonScan(call.args_start)
        args_end = call.args_scan.advance(buf) or len(buf)
        piece = buf[call.args_start + call.args_sent : args_end]
        if piece:
            call.args_sent += len(piece)
            deltas.append(ToolCallDelta(call.index, arguments=piece))

    def _new_index(self) -> int:
        self._num_indices += 1
        return self._num_indices - 1

    def _complete(
        self, call: _OpenCall, text: str, deltas: list[ToolCallDelta], content: list[str], truncated: bool
    ) -> None:
        if call.bare_args:
            text = f'{{"name": {json.dumps(call.name)}, "arguments": {text.strip() or "{}"}}}'
        outcomes = self._judge(text)
        good = [o for o in outcomes if o.call is not None]
        if call.index is not None:  # incremental: the header (and maybe arguments) went out already
            self._close_streamed(call, good, deltas, truncated)
            if not good:
                self.outcomes.extend(outcomes)
            return
        if not good:
            content.append(text)
            if not self._implicit:
                self.outcomes.extend(outcomes)
            return
        self.outcomes.extend(o for o in outcomes if o.call is None)
        for o in good:
            assert o.call is not None
            if self._is_surplus(o.call):
                continue
            index = self._new_index()
            deltas.append(ToolCallDelta(index, id=o.call.id, name=o.call.name, arguments=""))
            deltas.append(ToolCallDelta(index, arguments=o.call.arguments))
            self._record(o.call, o.outcome)

    def _close_streamed(
        self, call: _OpenCall, good: list[CallOutcome], deltas: list[ToolCallDelta], truncated: bool
    ) -> None:
        assert call.index is not None
        sent = self._buf[call.args_start : call.args_start + call.args_sent] if call.args_start is not None else ""
        if truncated and not good:
            # Cut short (max_tokens) where no repair makes a call of its schema: as the answer not streamed (its
            # text, finish_reason "length") and OpenAI's, the arguments end where the model stopped, and no
            # closing makes them parse into a call a client would run ({"time": null} against a required string).
            self.num_cut += 1
            self._record(ToolCall(call.name or "", sent, call.id or ""), "failed")
            return
        if call.args_sent:
            if truncated:
                suffix = closing_suffix(sent)
                deltas.append(ToolCallDelta(call.index, arguments=suffix))
                sent += suffix
        else:
            # Arguments were absent, a string or a scalar: send what the repair made of them.
            sent = good[0].call.arguments if len(good) == 1 and good[0].call is not None else "{}"
            deltas.append(ToolCallDelta(call.index, arguments=sent))
        outcome = good[0].outcome if len(good) == 1 else "failed"
        streamed = ToolCall(call.name or "", sent, call.id or "")
        try:
            drop_reason(streamed, self._seen, 0, self.repairer.config)  # sent already: only remembered
        except ValueError:
            pass  # arguments that do not parse: nothing later can repeat them
        self._record(streamed, outcome)

    def _is_surplus(self, call: ToolCall) -> bool:
        verdict = drop_reason(call, self._seen, len(self.calls), self.repairer.config)
        if verdict == "duplicate":
            self.num_duplicates += 1
        return verdict is not None

    def _judge(self, text: str) -> list[CallOutcome]:
        return self.repairer.snippet_outcomes(Snippet(text, True, 0, len(text)))

    def _record(self, call: ToolCall, outcome: str) -> None:
        self.calls.append(call)
        self.outcomes.append(CallOutcome(outcome, call if outcome != "failed" else None, call.name))  # type: ignore[arg-type]


@dataclass
class _OpenCall:
    start: int
    name: str | None = None
    args_start: int | None = None
    bare_args: bool = False  # Mistral v11: the arguments object follows [ARGS] directly
    index: int | None = None
    id: str | None = None
    args_sent: int = 0
    # Resumable scans of the call object and of its arguments object: each delta scans new text only.
    scan: JsonScan = field(init=False, repr=False, compare=False)
    args_scan: JsonScan | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.scan = JsonScan(self.start)


def closing_suffix(text: str) -> str:
    """Text that closes a truncated JSON value into one that parses (best effort)."""
    scan = JsonScan(single_quotes=False, stop=False)
    scan.advance(text)
    quote, closers = scan.quote, "".join(reversed(scan.closers))
    # The cut may fall in a key, after a colon or after a comma: try the completions in turn.
    for middle in ("", ": null", " null", '"": null', "null", "0"):
        suffix = quote + middle + closers
        try:
            json.loads(text + suffix)
            return suffix
        except ValueError:
            continue
    return quote + closers
