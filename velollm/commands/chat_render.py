"""How `velollm run` writes a streamed answer: thinking dimmed between Ollama's markers, then the content,
and with `/set verbose` Ollama's timing lines."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TextIO

DIM, RESET = "\x1b[2m", "\x1b[0m"


class AnswerWriter:
    """Writes chunks of an /api/chat stream to `out`; returns the whole answer (content, thinking, last chunk)."""

    def __init__(self, out: TextIO, *, color: bool) -> None:
        self.out = out
        self.color = color

    def write(self, chunks: Iterable[dict[str, Any]]) -> tuple[str, str, dict[str, Any]]:
        content: list[str] = []
        thinking: list[str] = []
        last: dict[str, Any] = {}
        in_thinking = False
        for chunk in chunks:
            last = chunk
            message = chunk.get("message") or {}
            if message.get("thinking"):
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
        self._emit("\n")
        return "".join(content), "".join(thinking), last

    def _emit(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


def timings(final: dict[str, Any]) -> str:
    """Ollama's `--verbose` block, from the final chunk's durations (nanoseconds)."""

    def seconds(key: str) -> float:
        return float(final.get(key) or 0) / 1e9

    prompt_n, eval_n = int(final.get("prompt_eval_count") or 0), int(final.get("eval_count") or 0)
    prompt_s, eval_s = seconds("prompt_eval_duration"), seconds("eval_duration")
    lines = [f"total duration:       {seconds('total_duration'):.6f}s",
             f"load duration:        {seconds('load_duration'):.6f}s",
             f"prompt eval count:    {prompt_n} token(s)",
             f"prompt eval duration: {prompt_s:.6f}s",
             f"prompt eval rate:     {prompt_n / prompt_s if prompt_s else 0:.2f} tokens/s",
             f"eval count:           {eval_n} token(s)",
             f"eval duration:        {eval_s:.6f}s",
             f"eval rate:            {eval_n / eval_s if eval_s else 0:.2f} tokens/s"]
    return "\n".join(lines)
