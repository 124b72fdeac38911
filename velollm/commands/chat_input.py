"""What `velollm run` reads from the terminal: a message, or a block between \"\"\" markers (Ollama's
multi-line input, also for `/set system \"\"\"...`)."""

from __future__ import annotations

from collections.abc import Callable

ReadLine = Callable[[str], str]  # input() with its prompt; raises EOFError at the end of input


def read_message(read_line: ReadLine) -> str:
    """One message: a line, or everything between \"\"\" markers. Raises EOFError at the end of input."""
    line = read_line(">>> ")
    if not line.lstrip().startswith('"""'):
        return _newlines(line)
    return read_block(read_line, line.lstrip()[3:])


def read_block(read_line: ReadLine, first: str) -> str:
    """A \"\"\" block whose first line, after the opening quotes, is `first`: up to the closing quotes,
    reading more lines ("... ") while they have not come."""
    if first.rstrip().endswith('"""') and first.strip() != "":
        return _newlines(first.rstrip()[:-3])
    lines = [first] if first else []
    while True:
        line = read_line("... ")
        if line.rstrip().endswith('"""'):
            lines.append(line.rstrip()[:-3])
            return _newlines("\n".join(lines).strip("\n"))
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
