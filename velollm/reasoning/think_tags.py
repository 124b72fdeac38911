"""ThinkTagParser: `<think>...</think>` before the answer (Qwen3, QwQ, DeepSeek-R1 and its distills).

The thinking is recognised only at the start of the answer (after optional whitespace), or from the
first token on when the prompt opened it. Whitespace around it is trimmed as Ollama does (the
template writes `<think>\n` and `\n</think>\n\n`); a `<think>` later in the answer is content.
An answer cut inside the thinking (max_tokens) is all reasoning.
"""

from __future__ import annotations

from velollm.reasoning.parser import ReasoningDelta, ReasoningParser, ReasoningStream

_START, _REASONING, _CONTENT_START, _CONTENT = range(4)


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that is a proper start of `marker` (may still become it)."""
    for n in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


class ThinkTagStream(ReasoningStream):
    def __init__(self, start: str, end: str, in_reasoning: bool) -> None:
        self._start, self._end = start, end
        self._phase = _REASONING if in_reasoning else _START
        self._leading = True  # reasoning: whitespace after the open tag is dropped
        self._buf = ""

    @property
    def in_reasoning(self) -> bool:
        return self._phase in (_START, _REASONING)

    def feed(self, text: str) -> ReasoningDelta:
        self._buf += text
        out = ReasoningDelta()
        while True:
            piece, progressed = self._step()
            out += piece
            if not progressed:
                return out

    def finish(self) -> ReasoningDelta:
        buf, self._buf = self._buf, ""
        if self._phase == _START:
            self._phase = _CONTENT
            return ReasoningDelta(content=buf)
        if self._phase == _REASONING:
            return ReasoningDelta(reasoning=buf.rstrip())
        return ReasoningDelta(content=buf.lstrip() if self._phase == _CONTENT_START else buf)

    def _step(self) -> tuple[ReasoningDelta, bool]:
        if self._phase == _START:
            return self._step_start()
        if self._phase == _REASONING:
            return self._step_reasoning()
        if self._phase == _CONTENT_START:
            stripped = self._buf.lstrip()
            if not stripped:
                self._buf = ""
                return ReasoningDelta(), False
            self._phase, self._buf = _CONTENT, stripped
            return ReasoningDelta(), True
        buf, self._buf = self._buf, ""
        return ReasoningDelta(content=buf), False

    def _step_start(self) -> tuple[ReasoningDelta, bool]:
        head = self._buf.lstrip()
        if head.startswith(self._start):
            self._phase, self._buf = _REASONING, head[len(self._start):]
            return ReasoningDelta(), True
        if not head or self._start.startswith(head):
            return ReasoningDelta(), False  # may still become the open tag
        self._phase = _CONTENT
        return ReasoningDelta(), True

    def _step_reasoning(self) -> tuple[ReasoningDelta, bool]:
        if self._leading:
            self._buf = self._buf.lstrip()
            if not self._buf:
                return ReasoningDelta(), False
            self._leading = False
        at = self._buf.find(self._end)
        if at != -1:
            reasoning, self._buf = self._buf[:at].rstrip(), self._buf[at + len(self._end):]
            self._phase = _CONTENT_START
            return ReasoningDelta(reasoning=reasoning), True
        # Keep back a possible start of the end tag, and trailing whitespace (trimmed if the tag follows).
        keep = _partial_suffix(self._buf, self._end)
        body = self._buf[: len(self._buf) - keep]
        sure = body.rstrip()
        self._buf = self._buf[len(sure):]
        return ReasoningDelta(reasoning=sure), False


class ThinkTagParser(ReasoningParser):
    def __init__(self, start: str = "<think>", end: str = "</think>") -> None:
        self.start_marker = start
        self.end_marker = end

    def prompt_opens_reasoning(self, prompt_tail: str) -> bool:
        return prompt_tail.rstrip().endswith(self.start_marker)

    def stream(self, in_reasoning: bool = False) -> ThinkTagStream:
        return ThinkTagStream(self.start_marker, self.end_marker, in_reasoning)
