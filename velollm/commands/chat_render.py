"""How `velollm run` writes a streamed answer: thinking dimmed between Ollama's markers, then the content,
and with `/set verbose` Ollama's timing lines."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, TextIO

DIM, RESET = "\x1b[2m", "\x1b[0m"


class AnswerWriter:
    """Writes chunks of an /api/chat stream to `out`; returns the whole answer (content, thinking, last chunk)."""

    def __init__(self, out: TextIO, *, color: bool, show_thinking: bool = True, word_wrap: bool = False,
                 columns: Callable[[], int] | None = None) -> None:
        self.out = out
        self.color = color
        self.show_thinking = show_thinking  # False: `--hidethinking`, the thinking is kept but not written
        # after the answer: Ollama's two Println, in a chat (a blank line before the next prompt) as after a one-shot
        # answer (cmd.go generate(): `if opts.Prompt != "" { fmt.Println(); fmt.Println() }`)
        self.end = "\n\n"
        # Ollama's word wrap (on unless --nowordwrap or /set nowordwrap): a word that would end past the
        # terminal's width less 5 moves to the next line; only on a terminal at least 10 columns wide
        self.word_wrap = word_wrap
        self.columns = columns or self._terminal_columns
        self._line = 0  # columns written on the current line
        self._word = ""  # the word being written (moved down whole when the line overflows)

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
                self._display(message["thinking"])
            if message.get("content"):
                if in_thinking:
                    in_thinking = False
                    self._emit((RESET if self.color else "") + _line_end(thinking) + "...done thinking.\n\n")
                content.append(message["content"])
                self._display(message["content"])
        if in_thinking:  # only thinking (num_predict ran out): Ollama never closes it, its two newlines end it
            self._emit(RESET if self.color else "")
        self._emit(self.end)
        return "".join(content), "".join(thinking), last

    def show(self, text: str) -> None:
        """Text that is not streamed (a model's MESSAGE history), wrapped as an answer is."""
        self._display(text)
        self._emit("")

    def _emit(self, text: str) -> None:
        """A marker or the end of the answer: written as it is; what follows starts a line."""
        self._line, self._word = 0, ""
        self.out.write(text)
        self.out.flush()

    def _display(self, text: str) -> None:
        """Answer text, word-wrapped as Ollama's displayResponse does it: a character that would pass the
        width less 5 sends the word it ends to the next line (the cursor backs over it, clears the rest of
        the line); a word longer than the width less 10 is broken where it is; wide characters break anywhere."""
        width = self.columns() if self.word_wrap else 0
        if width < 10:
            self._line, self._word = 0, ""
            self.out.write(text)
            self.out.flush()
            return
        from rich.cells import cell_len

        parts: list[str] = []
        for ch in text:
            cells = cell_len(ch)
            if ch == "\n":
                parts.append(ch)
                self._line, self._word = 0, ""
            elif self._line + 1 > width - 5 and ch == " ":  # the line is full at a space: it ends there
                parts.append("\n")
                self._line, self._word = 0, ""
            elif self._line + 1 > width - 5:
                back = cell_len(self._word)
                if back > width - 10:  # a word too long to move: broken here
                    parts.append("\n" + ch)
                    self._word = "" if cells >= 2 else ch
                    self._line = cells
                    continue
                parts.append((f"\x1b[{back}D" if back else "") + "\x1b[K\n" + self._word + ch)
                self._line = back + cells
                self._word = "" if cells >= 2 else self._word + ch
            else:
                parts.append(ch)
                self._line += cells
                self._word = "" if cells >= 2 or ch == " " else self._word + ch
        self.out.write("".join(parts))
        self.out.flush()

    def _terminal_columns(self) -> int:
        """The width of the terminal `out` writes to; 0 when it is not one (a pipe, a file: no wrap)."""
        try:
            return os.get_terminal_size(self.out.fileno()).columns if self.out.isatty() else 0
        except (AttributeError, OSError, ValueError):
            return 0


def _line_end(thinking: list[str]) -> str:
    """The newline that ends the thinking before "...done thinking.", unless the thinking ended its line itself
    (Ollama: `if !strings.HasSuffix(thinkingContent.String(), "\n") { fmt.Println() }`)."""
    return "" if thinking and thinking[-1].endswith("\n") else "\n"


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
