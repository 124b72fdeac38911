"""Prometheus metrics (one CollectorRegistry per app) and the periodic stats log line.

Request-level numbers (counts, latencies) are recorded by the handlers; engine-level numbers (queue,
KV usage, prefix cache, token counters) are read from `engine.stats()` at scrape time, so they are
never stale and never double-counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from velollm.api.registry import ModelRegistry

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                    10.0, 20.0, 40.0, 80.0, 160.0, 640.0)
# Model labels: only names the server knows (ModelRegistry.known_name), others as one value, so that
# clients cannot grow the series count by sending names; long names are cut.
UNKNOWN_MODEL_LABEL = "unknown"
MAX_LABEL_CHARS = 128
_TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
                 2.5, 5.0, 10.0)


class _EngineCollector:
    """Reads every served engine's stats at scrape time."""

    def __init__(self, models: ModelRegistry, rates: dict[str, float]) -> None:
        self.models = models
        self.rates = rates

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        gauges = {
            "queue_size": GaugeMetricFamily("velollm_queue_size", "Requests waiting to be scheduled", labels=["model"]),
            "running": GaugeMetricFamily("velollm_running_requests", "Requests being generated", labels=["model"]),
            "batches": GaugeMetricFamily("velollm_active_batches",
                                         "Engines running a batch now (one batch per engine step)", labels=["model"]),
            "kv": GaugeMetricFamily("velollm_kv_cache_usage_ratio", "Fraction of KV blocks in use (0..1)",
                                    labels=["model"]),
            "blocks": GaugeMetricFamily("velollm_allocated_blocks", "KV blocks held by requests", labels=["model"]),
            "total_blocks": GaugeMetricFamily("velollm_kv_cache_blocks", "KV blocks in the cache", labels=["model"]),
            "tps": GaugeMetricFamily("velollm_tokens_per_second",
                                     "Generated tokens per second over the last stats interval", labels=["model"]),
        }
        counters = {
            "tokens": CounterMetricFamily("velollm_tokens", "Tokens processed", labels=["model", "kind"]),
            "pq": CounterMetricFamily("velollm_prefix_cache_queries", "Prompt tokens looked up in the prefix cache",
                                      labels=["model"]),
            "ph": CounterMetricFamily("velollm_prefix_cache_hits", "Prompt tokens found in the prefix cache",
                                      labels=["model"]),
            "aborted": CounterMetricFamily("velollm_aborted_requests", "Engine requests aborted (client gone)",
                                           labels=["model"]),
            "preempted": CounterMetricFamily("velollm_preemptions", "Requests preempted for lack of KV blocks",
                                             labels=["model"]),
            "turn_prefills": CounterMetricFamily("velollm_turn_prefills", "Next-turn prefixes prefilled in the "
                                                 "background (done), or dropped (no free blocks, a failed step, "
                                                 "too many queued)", labels=["model", "outcome"]),
            "turn_prefill_tokens": CounterMetricFamily("velollm_turn_prefill_tokens", "Prompt tokens the "
                                                       "background next-turn prefills computed", labels=["model"]),
        }
        for served in self.models.models():
            s = served.engine.stats()
            m = [served.name]
            gauges["queue_size"].add_metric(m, s.num_waiting)
            gauges["running"].add_metric(m, s.num_running)
            gauges["batches"].add_metric(m, 1 if s.num_running else 0)
            gauges["kv"].add_metric(m, s.kv_cache_usage)
            gauges["blocks"].add_metric(m, s.num_allocated_blocks)
            gauges["total_blocks"].add_metric(m, s.num_total_blocks)
            gauges["tps"].add_metric(m, self.rates.get(served.name, 0.0))
            counters["tokens"].add_metric([served.name, "prompt"], s.num_prompt_tokens)
            counters["tokens"].add_metric([served.name, "generation"], s.num_generation_tokens)
            counters["pq"].add_metric(m, s.prefix_cache_queries)
            counters["ph"].add_metric(m, s.prefix_cache_hits)
            counters["aborted"].add_metric(m, s.num_aborted)
            counters["preempted"].add_metric(m, s.num_preemptions)
            counters["turn_prefills"].add_metric([served.name, "done"], s.num_turn_prefills)
            counters["turn_prefills"].add_metric([served.name, "dropped"], s.num_dropped_turn_prefills)
            counters["turn_prefill_tokens"].add_metric(m, s.num_turn_prefill_tokens)
        pool = getattr(self.models, "pool", None)
        if pool is not None:
            loads = CounterMetricFamily("velollm_model_loads", "On-demand model loads: cold (from the files), "
                                        "host (woken from host memory after an eviction) or prefetch (loaded ahead "
                                        "of a predicted request)", labels=["model", "kind"])
            for (model, kind), n in pool.load_counts.items():
                loads.add_metric([model, kind], n)
            yield loads
            prefetches = CounterMetricFamily("velollm_model_prefetch", "Models loaded ahead: used (a request found "
                                             "it loaded or loading: a load avoided), unused (unloaded unasked) or "
                                             "cancelled (stopped half-way, its memory freed: a request for another "
                                             "model needed the turn)",
                                             labels=["model", "outcome"])
            for (model, outcome), n in pool.prefetch_counts.items():
                prefetches.add_metric([model, outcome], n)
            yield prefetches
        yield from gauges.values()
        yield from counters.values()
        yield from self._settings()

    def _settings(self) -> Iterator[Any]:
        """How each engine was built: what `velollm optimize --check` compares with its advice."""
        from prometheus_client.core import GaugeMetricFamily

        info = GaugeMetricFamily("velollm_engine_info", "Engine build settings (value 1)",
                                 labels=["model", "device", "dtype", "cuda_graphs", "kv_cache_dtype",
                                         "async_scheduling"])
        numbers = {
            "max_num_seqs": GaugeMetricFamily("velollm_max_num_seqs", "Most requests batched at once", labels=["model"]),
            "max_model_len": GaugeMetricFamily("velollm_max_model_len", "Context length served", labels=["model"]),
            "kv_cache_bytes": GaugeMetricFamily("velollm_kv_cache_bytes", "KV cache size in bytes", labels=["model"]),
        }
        for served in self.models.models():
            st = served.engine.settings()
            info.add_metric([served.name, st.device, st.dtype, str(st.cuda_graphs).lower(),
                             st.kv_cache_dtype or st.dtype, str(st.async_scheduling).lower()], 1)
            for key, family in numbers.items():
                family.add_metric([served.name], getattr(st, key))
        yield info
        yield from numbers.values()


class ServerMetrics:
    """The app's metrics; `render()` is what /metrics returns."""

    def __init__(self, models: ModelRegistry) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.models = models
        self.registry = CollectorRegistry()
        self.rates: dict[str, float] = {}
        self.requests = Counter("velollm_requests", "HTTP requests by model, endpoint and status",
                                ["model", "endpoint", "status"], registry=self.registry)
        self.duration = Histogram("velollm_request_duration_seconds", "Request latency, arrival to last byte",
                                  ["model", "endpoint"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.ttft = Histogram("velollm_time_to_first_token_seconds", "Arrival to first generated token",
                              ["model"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.tpot = Histogram("velollm_time_per_output_token_seconds",
                              "(last token - first token) / (output tokens - 1), per request",
                              ["model"], buckets=_TPOT_BUCKETS, registry=self.registry)
        self.tool_calls = Counter("velollm_tool_calls", "Tool calls by outcome: valid, repaired (fixed, coerced), "
                                  "retried (a new generation after an unusable call), failed (returned as content)",
                                  ["model", "outcome"], registry=self.registry)
        self.routed = Counter("velollm_routed_requests", "Requests for the virtual model (routing by complexity), "
                              "by route (rule name, knn or default) and the model chosen",
                              ["route", "model"], registry=self.registry)
        self.store_rows_skipped = Counter(
            "velollm_store_rows_skipped", "Stored responses and chat completions not kept for being over "
            "--responses-max-row-size, by store (responses, chat_completions) and outcome (refused: a 400 before "
            "generation; unstored: answered, not stored); and responses whose end the store could not write, "
            "tried twice (write_failed: answered failed)", ["store", "outcome"], registry=self.registry)
        self.store_rows_evicted = Counter(
            "velollm_store_rows_evicted", "Stored responses and chat completions taken out by a retention limit, "
            "by store (responses, chat_completions) and limit (age: 30 days; count: --responses-max; size: "
            "--responses-max-store-size)", ["store", "limit"], registry=self.registry)
        self.connections_closed = Counter(
            "velollm_connections_closed", "Connections closed by the server while waiting for a request "
            "(api/header_deadline.py), by reason: idle (nothing sent in --header-timeout), header_timeout (part of "
            "a request, not its whole headers, in --header-timeout), request_line_too_long (414), headers_too_large "
            "(431)", ["reason"],
            registry=self.registry)
        self.registry.register(_EngineCollector(models, self.rates))
        backends = getattr(getattr(models, "upstream", None), "metrics_collector", None)  # velollm.router: per-backend series
        if backends is not None:
            self.registry.register(backends)

    def count_background(self, num_live: Callable[[], int]) -> None:
        """The gauge of background responses queued or in progress, read from the registry at each scrape (each
        one holds an engine request or an upstream stream, and outlives the HTTP request that made it)."""
        from prometheus_client import Gauge

        gauge = Gauge("velollm_background_responses", "Background responses (background: true) queued or in "
                      "progress", registry=self.registry)
        gauge.set_function(lambda: float(num_live()))

    def label(self, model: str) -> str:
        """The metric label for a model name as a client sent it ("" for routes without a model)."""
        if not model:
            return ""
        known = self.models.known_name(model)
        if known is None:
            return UNKNOWN_MODEL_LABEL
        # the client's spelling when it is the known one give or take ":latest" (at most two per model)
        label = model if model in (known, known.removesuffix(":latest")) else known
        return label[:MAX_LABEL_CHARS]

    def observe_request(self, model: str, endpoint: str, status: int, duration_s: float) -> None:
        model = self.label(model)
        self.requests.labels(model, endpoint, str(status)).inc()
        self.duration.labels(model, endpoint).observe(duration_s)

    def observe_generation(self, model: str, ttft_s: float | None, decode_s: float | None,
                           num_output_tokens: int) -> None:
        model = self.label(model)
        if ttft_s is not None:
            self.ttft.labels(model).observe(ttft_s)
        if decode_s is not None and num_output_tokens > 1:
            self.tpot.labels(model).observe(decode_s / (num_output_tokens - 1))

    def observe_tool_call(self, model: str, outcome: str) -> None:
        model = self.label(model)
        self.tool_calls.labels(model, outcome).inc()

    def observe_store_skip(self, store: str, outcome: str) -> None:
        self.store_rows_skipped.labels(store, outcome).inc()

    def observe_store_eviction(self, store: str, limit: str, num_rows: int) -> None:
        if num_rows:
            self.store_rows_evicted.labels(store, limit).inc(num_rows)

    def observe_route(self, route: str, model: str) -> None:
        self.routed.labels(route, model).inc()

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


@dataclass
class _Snapshot:
    t: float
    prompt: int
    generation: int


class StatsLogger:
    """Logs one line per model every `interval_s` while there is work, and updates tokens/s."""

    def __init__(self, models: ModelRegistry, metrics: ServerMetrics, interval_s: float) -> None:
        self.models = models
        self.metrics = metrics
        self.interval_s = interval_s
        self._last: dict[str, _Snapshot] = {}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.tick()
            except Exception:  # a stats glitch must never take the server down
                logger.exception("stats logging failed")

    def tick(self) -> None:
        now = time.perf_counter()
        for served in self.models.models():
            s = served.engine.stats()
            last = self._last.get(served.name, _Snapshot(now, s.num_prompt_tokens, s.num_generation_tokens))
            dt = max(now - last.t, 1e-9)
            prompt_tps = (s.num_prompt_tokens - last.prompt) / dt
            gen_tps = (s.num_generation_tokens - last.generation) / dt
            self._last[served.name] = _Snapshot(now, s.num_prompt_tokens, s.num_generation_tokens)
            self.metrics.rates[served.name] = gen_tps
            if s.num_running or s.num_waiting or prompt_tps or gen_tps:
                hit = s.prefix_cache_hits / s.prefix_cache_queries if s.prefix_cache_queries else 0.0
                logger.info("%s: prompt %.1f tok/s, generation %.1f tok/s, running %d, waiting %d, "
                            "KV usage %.1f%%, prefix cache hit rate %.1f%%", served.name, prompt_tps, gen_tps,
                            s.num_running, s.num_waiting, 100 * s.kv_cache_usage, 100 * hit)
