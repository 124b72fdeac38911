"""How `velollm run` writes a streamed answer: thinking dimmed between Ollama's markers, then the content,
and with `/set verbose` Ollama's timing lines."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TextIO

DIM, RESET = "\x1b[2m", "\x1b[0m"


class AnswerWriter:
    """Writes chunks of an /api/chat stream to `out`; returns the whole answer (content, thinking, last chunk)."""

    def __init__(self, out: TextIO, *, color: bool, show_thinking: bool = True) -> None:
        self.out = out
        self.color = color
        self.show_thinking = show_thinking  # False: `--hidethinking`, the thinking is kept but not written
        self.end = "\n"  # after the answer; "\n\n" in a chat: Ollama leaves a blank line before the next prompt

    def write(self, chunks: Iterable[dict[str, Any]]) -> tuple[str, str, dict[str, Any]]:
        content: list[str] = []
        thinking: list[str] = []
        last: dict[str, Any] = {}
        in_thinking = False
        for chunk in chunks:
            last = chunk
            message = chunk.get("message") or {}
            if message.get("thinking") and not self.show_thinking:
                thinking.append(message["thinking"])
            elif message.get("thinking"):
                if not in_thinking:
                    in_thinking = True
                    self._emit("Thinking...\n" + (DIM if self.color else ""))
                thinking.append(message["thinking"])
                self._emit(message["thinking"])
            if message.get("content"):
                if in_thinking:
                    in_thinking = False
                    self._emit((RESET if self.color else "") + "\n...done thinking.\n\n")
                content.append(message["content"])
                self._emit(message["content"])
        if in_thinking:
            self._emit((RESET if self.color else "") + "\n...done thinking.\n")
        self._emit(self.end)
        return "".join(content), "".join(thinking), last

    def _emit(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


def go_duration(ns: int) -> str:
    """Go's time.Duration.String, as Ollama prints durations: "7.017324ms", "1.5s", "2m3.25s"."""
    if ns == 0:
        return "0s"
    sign, ns = ("-" if ns < 0 else ""), abs(ns)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_decimal(ns, 1_000)}\u00b5s"
    if ns < 1_000_000_000:
        return f"{sign}{_decimal(ns, 1_000_000)}ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    seconds = f"{_decimal(rest, 1_000_000_000)}s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    return f"{sign}{minutes}m{seconds}" if minutes else sign + seconds


def _decimal(n: int, unit: int) -> str:
    whole, frac = divmod(n, unit)
    digits = str(frac).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)


def timings(final: dict[str, Any]) -> str:
    """Ollama's `--verbose` block (api.Metrics.Summary), from the final chunk's durations (nanoseconds):
    a line only for a value above zero, durations as Go prints them."""

    def ns(key: str) -> int:
        return int(final.get(key) or 0)

    prompt_n, eval_n = ns("prompt_eval_count"), ns("eval_count")
    prompt_ns, eval_ns = ns("prompt_eval_duration"), ns("eval_duration")
    lines = [(ns("total_duration"), f"total duration:       {go_duration(ns('total_duration'))}"),
             (ns("load_duration"), f"load duration:        {go_duration(ns('load_duration'))}"),
             (prompt_n, f"prompt eval count:    {prompt_n} token(s)"),
             (prompt_ns, f"prompt eval duration: {go_duration(prompt_ns)}"),
             (prompt_ns, f"prompt eval rate:     {prompt_n / (prompt_ns / 1e9) if prompt_ns else 0:.2f} tokens/s"),
             (eval_n, f"eval count:           {eval_n} token(s)"),
             (eval_ns, f"eval duration:        {go_duration(eval_ns)}"),
             (eval_ns, f"eval rate:            {eval_n / (eval_ns / 1e9) if eval_ns else 0:.2f} tokens/s")]
    return "\n".join(line for value, line in lines if value > 0)
