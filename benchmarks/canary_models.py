"""The models that ``benchmarks/canary.py`` serves as stable and canary versions.

Registered with the registry's generic Python flavor (joblib), so the model server process must
import this module by the name it was pickled under (``canary_models``): the benchmark runs
with ``benchmarks/`` on ``sys.path``, and so does the server process it spawns.

A :class:`ScoringModel` wraps a fitted scikit-learn classifier and answers, per row, the score
P(y = 1 | x) = σ((f(x) + bias) × sharpness), f being the classifier's decision function. What
makes a version good or bad is a property of the model and of each row, never of the load
generator: a row fails or sleeps according to a hash of its bytes, so the same row always
fails (or not) on the same model, and a canary that fails below ``fail_share`` 0.03 fails every
row that a stable one at 0.01 fails plus 2 % more.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

_NORMAL = NormalDist()


class RowFailure(RuntimeError):
    """The model cannot score this row (the served request answers HTTP 500)."""


def row_uniforms(row: np.ndarray[Any, Any]) -> tuple[float, float]:
    """Two independent uniforms in [0, 1) from the row's bytes (blake2b, 16 bytes)."""
    digest = hashlib.blake2b(np.ascontiguousarray(row, dtype=np.float64).tobytes(), digest_size=16)
    raw = digest.digest()
    return (
        int.from_bytes(raw[:8], "big") / 2.0**64,
        int.from_bytes(raw[8:], "big") / 2.0**64,
    )


@dataclass
class ScoringModel:
    """A classifier served as a score, with row-determined failures and delays.

    ``fail_share``: rows whose first hash uniform is below it raise :class:`RowFailure`.
    ``bias`` / ``sharpness``: shift / stretch the decision function before the sigmoid (a
    prediction shift, or a spread change that keeps the mean of a symmetric score).
    ``delay_median_s`` / ``delay_sigma``: each row sleeps a lognormal extra time whose
    quantile is the row's second hash uniform (the same row always takes as long).
    """

    classifier: Any
    fail_share: float = 0.0
    bias: float = 0.0
    sharpness: float = 1.0
    delay_median_s: float = 0.0
    delay_sigma: float = 0.0

    def predict(self, x: Any) -> np.ndarray[Any, Any]:
        rows = np.asarray(x, dtype=np.float64)
        delay_s = 0.0
        for row in rows:
            u_fail, u_delay = row_uniforms(row)
            if u_fail < self.fail_share:
                raise RowFailure(f"cannot score this row (hash {u_fail:.4f} < {self.fail_share})")
            if self.delay_median_s > 0:
                q = min(max(u_delay, 1e-12), 1 - 1e-12)
                delay_s += self.delay_median_s * math.exp(self.delay_sigma * _NORMAL.inv_cdf(q))
        if delay_s > 0:
            time.sleep(delay_s)
        z = np.asarray(self.classifier.decision_function(rows), dtype=np.float64)
        scores: np.ndarray[Any, Any] = 1.0 / (1.0 + np.exp(-(z + self.bias) * self.sharpness))
        return scores
