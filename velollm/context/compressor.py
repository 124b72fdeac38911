"""Compressor: the lossless steps of `compress`, in order, each measured (tokens saved, seconds)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from velollm.context.dedupe import dedupe
from velollm.context.json_minify import minify_tool_results
from velollm.context.report import ContextReport
from velollm.context.whitespace import squeeze_whitespace

Messages = list[Mapping[str, Any]]
Step = Callable[[Messages], Messages]
# Dedupe first: identical copies are found before whitespace or JSON rewriting could make them differ.
# JSON before whitespace: minified, a JSON value is left alone by the whitespace step.
STEPS: tuple[tuple[str, Step], ...] = (("dedupe", dedupe), ("json", minify_tool_results),
                                       ("whitespace", squeeze_whitespace))


class Compressor:
    """Applies every step (one message out per message in, so indices keep their meaning)."""

    def __init__(self, steps: tuple[tuple[str, Step], ...] = STEPS) -> None:
        self.steps = steps

    def apply(self, messages: Messages) -> Messages:
        for _, step in self.steps:
            messages = step(messages)
        return messages

    def compress(self, messages: Messages, count: Callable[[Messages], int], report: ContextReport) -> Messages:
        """`apply`, with each step's saved tokens and time in the report."""
        before = count(messages)
        for name, step in self.steps:
            t0 = time.perf_counter()
            messages = step(messages)
            after = count(messages)
            report.step_seconds[name] = time.perf_counter() - t0
            report.saved_tokens[name] = before - after
            before = after
        return messages
