"""Per-backend Prometheus series, read at scrape time (registered into the app's registry by
velollm.api.metrics): in flight, waiting, requests, errors by kind, ejected state, latency histogram.
Each family has its own name and one label set: the requests waiting for a backend are
`velollm_backend_queue_size{backend}`, apart from the engines' `velollm_queue_size{model}`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from velollm.router.backend import Backend
    from velollm.router.local import LocalReplica

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 600.0)


class RouterMetrics:
    """A prometheus-client collector over the router's backends."""

    def __init__(self, backends: Sequence[Backend | LocalReplica]) -> None:
        from prometheus_client import Histogram

        self.backends = backends
        # Not registered anywhere itself: collect() yields it with the rest.
        self.latency = Histogram("velollm_backend_request_duration_seconds",
                                 "Request latency per backend, sent to last byte", ["backend"],
                                 buckets=LATENCY_BUCKETS, registry=None)

    def observe(self, backend: str, seconds: float) -> None:
        self.latency.labels(backend).observe(seconds)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        in_flight = GaugeMetricFamily("velollm_backend_in_flight", "Requests sent to the backend and not finished",
                                      labels=["backend"])
        waiting = GaugeMetricFamily("velollm_backend_queue_size", "Requests waiting in VeloLLM for a free slot on "
                                    "the backend (its max_concurrency)", labels=["backend"])
        ejected = GaugeMetricFamily("velollm_backend_ejected", "1 while the backend is ejected (unhealthy)",
                                    labels=["backend"])
        requests = CounterMetricFamily("velollm_backend_requests", "Requests the backend answered",
                                       labels=["backend"])
        errors = CounterMetricFamily("velollm_backend_errors", "Backend failures: connect (unreachable), timeout "
                                     "(no first byte in time), stream (broken mid-answer), status (5xx)",
                                     labels=["backend", "kind"])
        failovers = CounterMetricFamily("velollm_backend_failovers", "Requests that failed on the backend before "
                                        "their first byte and went to another replica", labels=["backend"])
        ejections = CounterMetricFamily("velollm_backend_ejections", "Times the backend was ejected",
                                        labels=["backend"])
        for b in self.backends:
            in_flight.add_metric([b.name], b.queue.in_flight)
            waiting.add_metric([b.name], b.queue.waiting)
            ejected.add_metric([b.name], 1 if b.health.ejected else 0)
            requests.add_metric([b.name], b.requests)
            ejections.add_metric([b.name], b.health.ejections)
            failovers.add_metric([b.name], b.failovers)
            for kind in ("connect", "timeout", "stream", "status"):
                errors.add_metric([b.name, kind], b.errors[kind])
        yield from (in_flight, waiting, ejected, requests, errors, ejections, failovers)
        yield from self.latency.collect()
