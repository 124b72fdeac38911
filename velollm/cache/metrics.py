"""CacheMetrics: the cache's Prometheus series, registered in the server's registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_LOOKUP_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class CacheMetrics:
    def __init__(self, registry: Any, count_entries: Callable[[], int]) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.hits = Counter("velollm_cache_hits", "Requests answered from the response cache",
                            ["kind"], registry=registry)
        self.misses = Counter("velollm_cache_misses", "Cacheable requests not found in the cache",
                              registry=registry)
        self.bypass = Counter("velollm_cache_bypass", "Requests that skipped the cache, by reason",
                              ["reason"], registry=registry)
        self.rejected = Counter("velollm_cache_semantic_rejects", "Semantic candidates the verifier turned down, "
                                "by guard", ["reason"], registry=registry)
        self.store_failures = Counter("velollm_cache_store_failures", "Answers that could not be stored "
                                      "(full disk, unreachable Redis)", registry=registry)
        self.purged = Counter("velollm_cache_purged", "Entries deleted because their model's name came to stand for "
                              "another model (its files or listed digest changed)", registry=registry)
        self.entries = Gauge("velollm_cache_entries", "Entries in the response cache", registry=registry)
        self.entries.set_function(count_entries)
        # Requests being answered (velollm/cache/in_flight.py), and those waiting for one of them; InFlight
        # sets their functions. A request that ended, however it ended, is in neither.
        self.flights = Gauge("velollm_cache_flights", "Cacheable requests being answered (looked up, generated, "
                             "stored)", registry=registry)
        self.waiting = Gauge("velollm_cache_flight_waiters", "Requests waiting for an identical or rephrased "
                             "request in flight", registry=registry)
        self.waits = Counter("velollm_cache_flight_waits", "Waits for a request in flight, by how they ended: "
                             "released (it ended), timeout (generated instead), cancelled (the client left)",
                             ["outcome"], registry=registry)
        self.lookup = Histogram("velollm_cache_lookup_seconds", "Time to look a request up (semantic: embedding "
                                "included)", ["tier"], buckets=_LOOKUP_BUCKETS, registry=registry)
