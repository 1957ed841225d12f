"""The worker's Prometheus instruments: the per-request ``shipyard_http_*`` families.

They are kept per app in their own ``CollectorRegistry``; under ``shipyard serve --workers N``
prometheus-client's multiprocess mode sums every worker's. The names, types and labels come from
the metric catalogue (:mod:`shipyard.metrics`) and are distinct from the store's per-version
``shipyard_serving_*`` series that the daemon publishes.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from shipyard.metrics import HTTP_REQUEST_DURATION, HTTP_REQUEST_ERRORS, HTTP_REQUESTS
from shipyard.serving.window import LATENCY_BUCKETS_S

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class HttpInstruments:
    """Requests by code, refusals and failures by kind, and request durations."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests_total = Counter(
            HTTP_REQUESTS.name, HTTP_REQUESTS.help, HTTP_REQUESTS.labels, registry=self.registry
        )
        self.errors_total = Counter(
            HTTP_REQUEST_ERRORS.name,
            HTTP_REQUEST_ERRORS.help,
            HTTP_REQUEST_ERRORS.labels,
            registry=self.registry,
        )
        self.duration = Histogram(
            HTTP_REQUEST_DURATION.name,
            HTTP_REQUEST_DURATION.help,
            HTTP_REQUEST_DURATION.labels,
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._ok: dict[tuple[str, int], tuple[Any, Any]] = {}
        # prometheus-client picks its value class from the environment when it is imported
        multiprocess = values.ValueClass is not values.MutexValue
        self._multiprocess_dir = os.environ.get(MULTIPROC_ENV) if multiprocess else None

    def ok(self, model: str, version: int, latency_s: float) -> None:
        """A 200; its label children are looked up once per version, not per request."""
        key = (model, version)
        got = self._ok.get(key)
        if got is None:
            v = str(version)
            got = (self.requests_total.labels(model, v, "200"), self.duration.labels(model, v))
            self._ok[key] = got
        got[0].inc()
        got[1].observe(latency_s)

    def error(self, model: str, version: int, status: int, kind: str) -> None:
        v = str(version)
        self.requests_total.labels(model, v, str(status)).inc()
        self.errors_total.labels(model, v, kind).inc()

    def exposition(self) -> bytes:
        """``/metrics``: this worker's metrics, or every worker's in multiprocess mode."""
        if self._multiprocess_dir is None:
            return bytes(generate_latest(self.registry))
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self._multiprocess_dir)
        return bytes(generate_latest(merged))
