"""ResponseEventStream: chat completion chunks in, the Responses API's typed stream events out.

Each output item is announced (`response.output_item.added`), filled with deltas (reasoning text,
output text, function call arguments) and closed (`...done`, `response.output_item.done`) before
the next one opens; the stream starts with `response.created` / `response.in_progress` and ends
with `response.completed` (or `response.incomplete` when max_output_tokens cut it or a cancel stopped it, or an
`error` event and `response.failed`). Every event carries a `sequence_number`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from velollm.responses.items import (
    encrypt_reasoning,
    function_call_item,
    message_item,
    new_id,
    reasoning_item,
    text_logprobs,
)
from velollm.responses.response_object import ResponseShell, usage_from_chat


def sse_frame(event: Mapping[str, Any]) -> bytes:
    """One event as Server-Sent Events: `event:` names its type, `data:` holds it."""
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


class _OpenItem:
    def __init__(self, index: int, item: dict[str, Any]) -> None:
        self.index, self.item, self.text = index, item, ""
        self.logprobs: list[dict[str, Any]] = []  # output_text logprobs (a message item's)


def _delta_logprobs(logprobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Logprobs as the text delta/done events carry them (no bytes)."""
    return [{"token": e["token"], "logprob": e["logprob"],
             "top_logprobs": [{"token": t["token"], "logprob": t["logprob"]} for t in e["top_logprobs"]]}
            for e in logprobs]


class ResponseEventStream:
    def __init__(self, shell: ResponseShell) -> None:
        self.shell = shell
        self.output: list[dict[str, Any]] = []
        self._open: _OpenItem | None = None
        self._calls: dict[int, _OpenItem] = {}  # chat tool-call index -> its item
        self._seq = 0
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None
        # Chat logprobs not yet given to a text delta (a token may come before its text does); an answer's
        # logprobs after its thinking go to its message text, as a whole chat completion's do (ResponseShell).
        self._logprobs: list[dict[str, Any]] = []
        self._thought = self._answered = False  # a thinking delta came; an output text delta came
        self.response: dict[str, Any] = shell.build("in_progress")

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def start(self) -> list[dict[str, Any]]:
        """`response.created` and `response.in_progress`; a background response is created `queued` (as its
        create answered) and says so (`response.queued`) before it runs."""
        if not self.shell.req.background:
            return [self._event("response.created", response=self.response),
                    self._event("response.in_progress", response=self.response)]
        queued = self.shell.build("queued")
        return [self._event("response.created", response=queued), self._event("response.queued", response=queued),
                self._event("response.in_progress", response=self.response)]

    def snapshot(self) -> dict[str, Any]:
        """The response as it stands mid-answer (GET of a background response still running): the items so far,
        the one still open with its text up to now."""
        output = [dict(item) for item in self.output]
        current = self._open
        if current is not None and current.item["type"] in ("message", "reasoning"):
            done = message_item if current.item["type"] == "message" else reasoning_item
            output[current.index]["content"] = [done(current.text)["content"][0]]
        elif current is not None:
            output[current.index]["arguments"] = current.text
        return self.shell.build("in_progress", output, self._usage)

    def chunk(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Events for one chat.completion.chunk (first choice; the usage chunk is remembered)."""
        if chunk.get("usage"):
            self._usage = usage_from_chat(chunk["usage"])
        events: list[dict[str, Any]] = []
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            self._take_logprobs(text_logprobs(choice.get("logprobs")), bool(reasoning), bool(delta.get("content")))
            if reasoning:
                events += self._text("reasoning", reasoning)
            if delta.get("content"):
                events += self._text("message", delta["content"])
            for call in delta.get("tool_calls") or []:
                events += self._call(call)
            self._finish = choice.get("finish_reason") or self._finish
        return events

    def _take_logprobs(self, logprobs: list[dict[str, Any]], reasoning: bool, content: bool) -> None:
        """Keep the output text's logprobs: not the thinking's tokens, nor (at the first text after a
        thinking) its end marker and the gap after it, which came in chunks without text."""
        if reasoning and not content:
            self._thought, self._logprobs = True, []
        elif content and self._thought and not self._answered:
            self._logprobs = logprobs
        else:
            self._logprobs += logprobs
        self._answered = self._answered or content

    def _open_item(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._close()
        self._open = _OpenItem(len(self.output), item)
        self.output.append(item)
        events.append(self._event("response.output_item.added", output_index=self._open.index, item=dict(item)))
        return events

    def _text(self, kind: str, text: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if self._open is None or self._open.item["type"] != kind:
            item = message_item("", "in_progress") if kind == "message" else reasoning_item("", "in_progress")
            empty_part = dict(item["content"][0])
            item["content"] = []
            events += self._open_item(item)
            events.append(self._event("response.content_part.added", item_id=item["id"],
                                      output_index=self._open.index, content_index=0, part=empty_part))  # type: ignore[union-attr]
        current = self._open
        assert current is not None
        current.text += text
        name = "response.output_text.delta" if kind == "message" else "response.reasoning_text.delta"
        extra = {}
        if kind == "message":
            logprobs, self._logprobs = self._logprobs, []
            current.logprobs += logprobs
            extra = {"logprobs": _delta_logprobs(logprobs)}
        events.append(self._event(name, item_id=current.item["id"], output_index=current.index, content_index=0,
                                  delta=text, **extra))
        return events

    def _call(self, call: Mapping[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        fn = call.get("function") or {}
        index = call.get("index", len(self._calls))
        current = self._calls.get(index)
        if current is None:
            item = function_call_item(call.get("id") or new_id("call"), fn.get("name") or "", "", "in_progress")
            events += self._open_item(item)
            current = self._calls[index] = self._open  # type: ignore[assignment]
        arguments = fn.get("arguments")
        if arguments:
            current.text += arguments
            events.append(self._event("response.function_call_arguments.delta", item_id=current.item["id"],
                                      output_index=current.index, delta=arguments))
        return events

    def _close(self, status: str = "completed") -> list[dict[str, Any]]:
        current, self._open = self._open, None
        if current is None:
            return []
        item, events = current.item, []
        item["status"] = status
        ids = {"item_id": item["id"], "output_index": current.index}
        if item["type"] == "function_call":
            item["arguments"] = current.text or "{}"
            events.append(self._event("response.function_call_arguments.done", **ids, name=item["name"],
                                      arguments=item["arguments"]))
        else:
            extra: dict[str, Any] = {}
            if item["type"] == "message":
                current.logprobs += self._logprobs  # tokens whose text came with an earlier delta or none
                self._logprobs = []
                part = message_item(current.text, logprobs=current.logprobs)["content"][0]
                extra = {"logprobs": _delta_logprobs(current.logprobs)}
            else:
                part = reasoning_item(current.text)["content"][0]
            item["content"] = [part]
            if item["type"] == "reasoning" and self.shell.req.encrypted_reasoning:
                item.update(encrypt_reasoning(item))
            kind = "output_text" if item["type"] == "message" else "reasoning_text"
            events.append(self._event(f"response.{kind}.done", **ids, content_index=0, text=current.text, **extra))
            events.append(self._event("response.content_part.done", **ids, content_index=0, part=part))
        events.append(self._event("response.output_item.done", output_index=current.index, item=dict(item)))
        return events

    def finish(self) -> list[dict[str, Any]]:
        """Close what is open and send the final response. Cut by max_output_tokens, the item still open is
        the one cut (`incomplete`); those closed before it (a finished thinking) stay completed."""
        cut = self._finish == "length"
        events = self._close("incomplete" if cut else "completed")
        if cut:
            self.response = self.shell.build("incomplete", self.output, self._usage,
                                             incomplete_reason="max_output_tokens")
            return events + [self._event("response.incomplete", response=self.response)]
        self.response = self.shell.build("completed", self.output, self._usage)
        return events + [self._event("response.completed", response=self.response)]

    def cancel(self) -> list[dict[str, Any]]:
        """The response cancelled mid-answer (POST /v1/responses/{id}/cancel): what was said so far, the item it
        cut `incomplete` (closed with its done events, as max_output_tokens closes it), then `response.incomplete`
        holding the response, status `cancelled`. The Responses stream has no cancelled event (the SDK reads an
        unknown type as another event's model); with none, a follower's stream just ended, as a dropped connection
        does, and a client resuming from its last sequence number could not tell that nothing more would come."""
        events = self._close("incomplete")
        self.response = self.shell.build("cancelled", self.output, self._usage)
        return events + [self._event("response.incomplete", response=self.response)]

    def fail_instead(self, final: list[dict[str, Any]], message: str, code: str) -> list[dict[str, Any]]:
        """`finish`'s events, not sent yet, with their last (the response's end) replaced by `fail`'s: an answer
        that ended but could not be stored ends failed. The sequence numbers go on unbroken."""
        self._seq = final[-1]["sequence_number"]
        return final[:-1] + self.fail(message, code)

    def fail(self, message: str, code: str | None = None, param: str | None = None) -> list[dict[str, Any]]:
        """After an error mid-stream: the `error` event, then `response.failed`. The item the error cut is
        `incomplete` in the failed response (kept in the store, GET shows it), as one cut by max_output_tokens.
        Its done events are not sent, so they take no sequence number: a gap would break a background run's
        resume (`starting_after` counts frames) and leave a client's numbering with holes."""
        seq = self._seq
        self._close("incomplete")
        self._seq = seq
        self.response = self.shell.build("failed", self.output, self._usage,
                                         error={"code": code or "server_error", "message": message})
        return [self._event("error", code=code, message=message, param=param),
                self._event("response.failed", response=self.response)]
