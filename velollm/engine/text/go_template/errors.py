"""The one error type of the Go template interpreter: Go's parse and exec errors, in Go's words; and the size
bound a template from a request may not pass (Go has none: a server must)."""

from __future__ import annotations

MAX_TEXT = 64 << 20  # characters: a template's output, or one printf/print result (a request body is <= 32 MiB)


class GoTemplateError(Exception):
    """A template that does not parse, or fails while executing (Go's text/template error text)."""


def too_long() -> GoTemplateError:
    return GoTemplateError(f"template: output exceeds {MAX_TEXT >> 20} MiB")


def bounded(text: str) -> str:
    """`text`, or an error when it is past MAX_TEXT (`{{ printf "%9999999d" 1 }}` in a loop, doubling strings)."""
    if len(text) > MAX_TEXT:
        raise too_long()
    return text
