"""What `velollm run` reads from the terminal: a message, or a block between \"\"\" markers (Ollama's
multi-line input, also for `/set system \"\"\"...`)."""

from __future__ import annotations

from collections.abc import Callable

ReadLine = Callable[[str], str]  # input() with its prompt; raises EOFError at the end of input


def read_message(read_line: ReadLine) -> str:
    """One message as typed (Ollama's CLI trims nothing: spaces around a line and the newlines of a block are the
    user's): a line, or everything between \"\"\" markers, the first and last at the very start and end of their
    lines. Raises EOFError at the end of input."""
    line = read_line(">>> ")
    if not line.startswith('"""'):
        return _newlines(line)
    return read_block(read_line, line[3:])


def read_block(read_line: ReadLine, first: str) -> str:
    """A \"\"\" block whose first line, after the opening quotes, is `first`: up to the closing quotes,
    reading more lines ("... ") while they have not come. Lines are joined by newlines, the first and last too
    when empty (`\"\"\"`, `hi`, `\"\"\"` is "\\nhi\\n", as Ollama's strings.Builder holds it)."""
    if first.endswith('"""'):
        return _newlines(first[:-3])
    lines = [first]
    while True:
        line = read_line("... ")
        if line.endswith('"""'):
            lines.append(line[:-3])
            return _newlines("\n".join(lines))
        lines.append(line)


def typed_text() -> str:
    """What was on the input line when Ctrl-C came ("" without readline)."""
    try:
        import readline
    except ImportError:
        return ""
    return readline.get_line_buffer()


def _newlines(text: str) -> str:
    """A paste (readline's bracketed paste) keeps the terminal's carriage returns: lines end in "\\n"."""
    return text.replace("\r\n", "\n").replace("\r", "\n")
