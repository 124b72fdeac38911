"""The one error type of the Go template interpreter: Go's parse and exec errors, in Go's words."""

from __future__ import annotations


class GoTemplateError(Exception):
    """A template that does not parse, or fails while executing (Go's text/template error text)."""
