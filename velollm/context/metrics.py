"""ContextMetrics: what context management did, as Prometheus counters on the server's registry."""

from __future__ import annotations

from typing import Any

from velollm.context.report import ContextReport


class ContextMetrics:
    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter

        self.fitted = Counter("velollm_context_overflows", "Prompts over their context budget, by the mode "
                              "that made them fit (truncate, compress)", ["model", "mode"], registry=registry)
        self.dropped_messages = Counter("velollm_context_dropped_messages", "Messages dropped by truncation",
                                        ["model"], registry=registry)
        self.summarized_messages = Counter("velollm_context_summarized_messages", "Messages replaced by a "
                                           "summary (compress)", ["model"], registry=registry)
        self.dropped_tokens = Counter("velollm_context_dropped_tokens", "Prompt tokens removed to fit the "
                                      "context (all steps)", ["model"], registry=registry)
        self.cut_prompts = Counter("velollm_context_cut_prompts", "Prompts cut at the token level (Ollama's "
                                   "num_keep ids and the tail) as dropping turns was not enough", ["model"],
                                   registry=registry)
        self.saved_tokens = Counter("velollm_context_saved_tokens", "Prompt tokens saved by each compression "
                                    "step", ["model", "step"], registry=registry)
        self.reused_tokens = Counter("velollm_context_prefix_reused_tokens", "Prompt tokens taken from an "
                                     "earlier turn's ids (prefetch hits across turns)", ["model"], registry=registry)

    def observe(self, model: str, report: ContextReport | None, num_reused: int) -> None:
        if num_reused:
            self.reused_tokens.labels(model).inc(num_reused)
        if report is None:
            return
        self.fitted.labels(model, report.mode).inc()
        self.dropped_messages.labels(model).inc(len(report.dropped_messages))
        self.summarized_messages.labels(model).inc(len(report.summarized_messages))
        self.dropped_tokens.labels(model).inc(max(0, report.num_original_tokens - report.num_prompt_tokens))
        if report.cut_tokens:
            self.cut_prompts.labels(model).inc()
        for step, saved in report.saved_tokens.items():
            self.saved_tokens.labels(model, step).inc(saved)
