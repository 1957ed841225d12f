"""What one worker saw of one model version since its last flush: a mergeable accumulator.

A :class:`Window` is fed by the request path (``update_ok`` / ``update_error``: a few counter
increments and list appends, no statistics) and combined with :meth:`Window.merge`, so windows of
several flushes or workers add up to the window of all their requests, as river's accumulators
and the statistics wing's profiles do. What the window becomes in the store is
:mod:`shipyard.serving.window_store`'s business.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shipyard.stats.latency import LatencyHistogram

LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
MAX_ROWS_PER_WINDOW = 50_000
"""Inputs and predictions kept per window; counts and latencies go on past it."""
MAX_ERROR_SAMPLES = 1000
MAX_TRACES_PER_WINDOW = 1000
"""Traced requests kept per window (refused and failed ones, and those sent with a
``traceparent``); counts go on past it."""

Prediction = tuple[str, float, np.ndarray[Any, Any], np.ndarray[Any, Any] | None]
"""(request id, time, predictions, class probabilities or None)"""
Traced = tuple[str, str, str | None, str, float, int, float]
"""(trace id, span id, the caller's span id or None, request id, time, status, latency ms)"""


@dataclass
class Window:
    """Counts, latencies, inputs, predictions and sampled requests of one model version."""

    start: float
    model: str
    version: int
    columns: tuple[str, ...]
    reference: dict[str, Any] | None = None
    requests: int = 0
    rows: int = 0
    errors: int = 0
    data_errors: int = 0
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    latency_sum_s: float = 0.0
    latency_fine: LatencyHistogram = field(default_factory=LatencyHistogram)
    inputs: list[np.ndarray[Any, Any]] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    traces: list[Traced] = field(default_factory=list)

    def observe_latency(self, seconds: float) -> None:
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.latency_sum_s += seconds
        self.latency_fine.update(seconds)

    def update_ok(
        self,
        x: np.ndarray[Any, Any],
        prediction: Prediction,
        latency_s: float,
        sample: dict[str, Any] | None = None,
        trace: Traced | None = None,
    ) -> Window:
        """Count one answered request; keep its rows while the window has room, and its trace
        (when the caller traced it) while the window has room for traces."""
        self.requests += 1
        self.rows += len(x)
        self.observe_latency(latency_s)
        if self.rows <= MAX_ROWS_PER_WINDOW:
            self.inputs.append(x)
            self.predictions.append(prediction)
        if sample is not None:
            self.samples.append(sample)
        if trace is not None and len(self.traces) < MAX_TRACES_PER_WINDOW:
            self.traces.append(trace)
        return self

    def update_error(
        self, kind: str, latency_s: float, sample: dict[str, Any], trace: Traced | None = None
    ) -> Window:
        """Count one refused (``kind="data"``) or failed request; failures are always worth a
        sample and a trace, within reason."""
        self.requests += 1
        self.observe_latency(latency_s)
        if kind == "data":
            self.data_errors += 1
        else:
            self.errors += 1
        if len(self.samples) < MAX_ERROR_SAMPLES:
            self.samples.append(sample)
        if trace is not None and len(self.traces) < MAX_TRACES_PER_WINDOW:
            self.traces.append(trace)
        return self

    def merge(self, other: Window) -> Window:
        """Add ``other`` (the same model version, a later or parallel window) to this one."""
        if (other.model, other.version) != (self.model, self.version):
            raise ValueError(
                f"cannot merge the window of {other.model} v{other.version} "
                f"into that of {self.model} v{self.version}"
            )
        self.start = min(self.start, other.start)
        self.requests += other.requests
        self.errors += other.errors
        self.data_errors += other.data_errors
        pairs = zip(self.latency_counts, other.latency_counts, strict=True)
        self.latency_counts = [a + b for a, b in pairs]
        self.latency_sum_s += other.latency_sum_s
        self.latency_fine.merge(other.latency_fine)
        room = MAX_ROWS_PER_WINDOW - sum(len(x) for x in self.inputs)
        for x, p in zip(other.inputs, other.predictions, strict=True):
            if len(x) > room:
                break
            self.inputs.append(x)
            self.predictions.append(p)
            room -= len(x)
        self.rows += other.rows
        self.samples.extend(other.samples)
        self.traces.extend(other.traces[: max(0, MAX_TRACES_PER_WINDOW - len(self.traces))])
        return self

    def latency_json(self) -> dict[str, Any]:
        return {
            "buckets_s": list(LATENCY_BUCKETS_S),
            "counts": list(self.latency_counts),
            "sum_s": self.latency_sum_s,
            "log": self.latency_fine.to_json(),  # canary analysis judges latency on these bins
        }
