"""A running server's Prometheus series, read over HTTP (benchmarks that drive `velollm serve`)."""

from __future__ import annotations

import httpx


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of a series over every label set that includes `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        total += sum(s.value for s in family.samples
                     if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))
    return total
