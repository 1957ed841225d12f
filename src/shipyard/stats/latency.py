"""Latency histograms fine enough to judge a canary: log-spaced bins of one relative width.

The model servers' Prometheus buckets (0.5, 1, 2.5, 5 ms …) are far too coarse for canary
analysis: a model answering in 0.6 ms puts every request of both versions in the (0.5, 1] ms
bucket, so a canary 15 % slower is indistinguishable from its stable version and the shift's
estimate and interval are exactly 0. These bins have a fixed *relative* width instead.

Bin ``i`` holds the values in (γ^(i−1), γ^i] with γ = (1 + α)/(1 − α); its representative
value 2γ^i/(γ + 1) is within a relative α of every value in the bin (the logarithmic mapping
of DDSketch: Masson, Rim & Lee 2019, "DDSketch: a fast and fully-mergeable quantile sketch
with relative-error guarantees", PVLDB 12(12):2195–2205, §2.1). With α = 1 % a latency
distribution from 0.1 ms to 10 s fills at most ~580 bins, stored sparsely.

Why binning keeps the canary tests sound: the bin is a fixed, monotone function of the value,
so two samples from one distribution stay alike after binning; the values handed to the tests
are spread evenly inside their bins (:meth:`LatencyHistogram.values_ms`), so each stays in its
latency's bin and no two tie. Only resolution is lost, about 2α of the value.
Histograms merge by adding counts, so windows from several workers and flushes combine.

>>> h = LatencyHistogram().update_many([0.0006, 0.0006, 0.00069])
>>> bool(np.allclose(h.values_ms(), [0.6, 0.6, 0.69], rtol=0.02))
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

RELATIVE_ACCURACY = 0.01
MIN_LATENCY_S = 1e-7
"""Values at or below this (and non-finite ones) count in the bin of this value."""


@dataclass
class LatencyHistogram:
    """Counts of latencies (seconds) in log-spaced bins of relative accuracy ``alpha``."""

    alpha: float = RELATIVE_ACCURACY
    counts_: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        self._log_gamma = math.log((1.0 + self.alpha) / (1.0 - self.alpha))

    def _index(self, seconds: float) -> int:
        if not seconds > MIN_LATENCY_S:  # also NaN
            seconds = MIN_LATENCY_S
        elif seconds == math.inf:
            seconds = 1e9
        return math.ceil(math.log(seconds) / self._log_gamma)

    def update(self, seconds: float) -> LatencyHistogram:
        """Count one latency (the model server's per-request call)."""
        i = self._index(seconds)
        self.counts_[i] = self.counts_.get(i, 0) + 1
        return self

    def update_many(self, seconds: Iterable[float]) -> LatencyHistogram:
        values = np.asarray(list(seconds), dtype=np.float64)
        values = np.where(np.isfinite(values), values, 1e9)
        values = np.maximum(values, MIN_LATENCY_S)
        index, counts = np.unique(np.ceil(np.log(values) / self._log_gamma), return_counts=True)
        for i, c in zip(index.astype(np.int64).tolist(), counts.tolist(), strict=True):
            self.counts_[i] = self.counts_.get(i, 0) + c
        return self

    def merge(self, other: LatencyHistogram) -> LatencyHistogram:
        """Add ``other``'s counts (same ``alpha`` only: bins of different widths do not align)."""
        if not math.isclose(other.alpha, self.alpha):
            raise ValueError(f"cannot merge histograms of accuracy {other.alpha} and {self.alpha}")
        for i, c in other.counts_.items():
            self.counts_[i] = self.counts_.get(i, 0) + c
        return self

    @property
    def count(self) -> int:
        return sum(self.counts_.values())

    def values_ms(self) -> NDArray[np.float64]:
        """One value per counted latency, in milliseconds, sorted: the c values of a bin are
        spread evenly over it (log scale, at the mid-points of c equal parts), so no two tie.

        Each value lies in the same bin as the latency it stands for, so within the bin's
        width (a relative 2α) of it; spreading them removes the ties that made every difference
        between two versions of one bin exactly 0 (the Hodges–Lehmann interval of an A/A
        comparison was [0, 0]). This is the linear interpolation inside a bucket that Prometheus'
        ``histogram_quantile`` does, on a log scale."""
        if not self.counts_:
            return np.empty(0)
        index = np.asarray(sorted(self.counts_), dtype=np.int64)
        counts = np.asarray([self.counts_[int(i)] for i in index], dtype=np.int64)
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        within = (np.arange(int(counts.sum())) - starts + 0.5) / np.repeat(counts, counts)
        log_s = (np.repeat(index, counts) - 1.0 + within) * self._log_gamma
        return np.exp(log_s) * 1000.0

    def representatives_ms(self) -> dict[int, float]:
        """Each bin's representative value 2γ^i/(γ + 1), in milliseconds."""
        gamma = math.exp(self._log_gamma)
        return {
            i: 2.0 * math.exp(i * self._log_gamma) / (gamma + 1.0) * 1000.0 for i in self.counts_
        }

    def to_json(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "counts": {str(i): c for i, c in sorted(self.counts_.items())}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatencyHistogram:
        return cls(
            float(data.get("alpha", RELATIVE_ACCURACY)),
            {int(i): int(c) for i, c in dict(data.get("counts") or {}).items()},
        )
