"""Compressor: the steps of `compress`, in order, each measured (tokens saved, seconds): the lossless
ones, then (with --context-compressor, only while the prompt is over its budget) the token classifier's
(velollm.context.lingua_step), whose earlier results `apply` puts in again."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from velollm.context.dedupe import dedupe
from velollm.context.json_minify import minify_tool_results
from velollm.context.report import ContextReport
from velollm.context.whitespace import squeeze_whitespace

if TYPE_CHECKING:
    from velollm.context.lingua_step import LinguaStep

Messages = list[Mapping[str, Any]]
Step = Callable[[Messages], Messages]
# Dedupe first: identical copies are found before whitespace or JSON rewriting could make them differ.
# JSON before whitespace: minified, a JSON value is left alone by the whitespace step.
STEPS: tuple[tuple[str, Step], ...] = (("dedupe", dedupe), ("json", minify_tool_results),
                                       ("whitespace", squeeze_whitespace))
LINGUA = "lingua"


class Compressor:
    """Applies every step (one message out per message in, so indices keep their meaning)."""

    def __init__(self, steps: tuple[tuple[str, Step], ...] = STEPS, lingua: LinguaStep | None = None,
                 count_text: Callable[[str], int] | None = None, namespace: str = "") -> None:
        """`lingua`: the classifier step; `count_text` counts a text's tokens for the model the prompt is for,
        `namespace` (its name) keeps its compressed texts apart from another model's."""
        if lingua is not None and count_text is None:
            raise ValueError("the lingua step needs count_text")
        self.steps = steps
        self.lingua = lingua
        self.count_text = count_text
        self.namespace = namespace

    def apply(self, messages: Messages) -> Messages:
        for _, step in self.steps:
            messages = step(messages)
        if self.lingua is not None:
            messages = self.lingua.cached(messages, self.namespace)
        return messages

    def compress(self, messages: Messages, count: Callable[[Messages], int], report: ContextReport,
                 budget: int | None = None) -> Messages:
        """The lossless steps, then the classifier's when a budget is given and the prompt is over it;
        each step's saved tokens and time in the report (the classifier's as "lingua")."""
        before = count(messages)
        for name, step in self.steps:
            messages, before = _measured(name, step, messages, count, before, report)
        if self.lingua is not None and self.count_text is not None and budget is not None and before > budget:
            lingua, count_text = self.lingua, self.count_text

            def fit(m: Messages) -> Messages:
                return lingua.fit(m, count, count_text, budget, self.namespace)

            messages, before = _measured(LINGUA, fit, messages, count, before, report)
        return messages


def _measured(name: str, step: Step, messages: Messages, count: Callable[[Messages], int], before: int,
              report: ContextReport) -> tuple[Messages, int]:
    t0 = time.perf_counter()
    messages = step(messages)
    after = count(messages)
    report.step_seconds[name] = time.perf_counter() - t0
    report.saved_tokens[name] = before - after
    return messages, after
