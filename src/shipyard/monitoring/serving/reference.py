"""A served version's labelled reference: the rows its loss model and multivariate fit learn from.

The registry keeps a version's reference *profile* (per-column histograms, no labels, no rows),
which is enough for input skew but not for direct loss estimation (a loss model learns from
labelled rows) nor for a joint-distribution test. The rows come from the reference *sample*
that the pipeline monitors keep (:mod:`shipyard.monitoring.multivariate`: up to 2,000 rows of
a data set published with ``observe(..., role="reference", label=...)``), found for a version

1. by its tags ``reference_pipeline`` and ``reference_dataset``, the newest such reference; else
2. among the references published by the run that registered it (``run_id``), the newest whose
   sample has every input of the version's signature (and a numeric label, when one has it).

A pipeline keeps a sample when its ``multivariate_drift`` or ``performance_estimation`` monitor
is on (the default for data pipelines; a training pipeline turns one on in its ``monitors:``).

The fits are cached by (model artifact, sample) digests, both content addresses, so the
daemon's serving task fits a version's loss model and PCA once, not on every tick.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select
from threadpoolctl import threadpool_limits

from shipyard.monitoring.estimation import loss_model
from shipyard.monitoring.multivariate import MIN_REFERENCE_ROWS
from shipyard.registry import Registry, VersionInfo
from shipyard.stats.estimation import DirectLossEstimator
from shipyard.stats.multivariate import ReconstructionDrift
from shipyard.store.monitoring import MonitorProfile

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

Array = np.ndarray[Any, Any]
CACHED_VERSIONS = 16
"""Fitted references kept in memory (least recently used dropped first)."""


@dataclass
class VersionReference:
    """The reference rows of a version in its signature's column order, and the fits on them."""

    pipeline: str
    dataset: str
    sample_digest: str
    features: Array
    """(rows, signature inputs), float64."""
    labels: Array | None
    """The numeric label of each row, when the reference kept one."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _reconstruction: dict[float, ReconstructionDrift] = field(default_factory=dict, repr=False)
    _dle: DirectLossEstimator | None = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "dataset": self.dataset,
            "rows": len(self.features),
            "labelled": self.labels is not None,
        }

    def reconstruction(self, variance_kept: float) -> ReconstructionDrift | None:
        """The PCA reconstruction fit on the reference rows; ``None`` for too few rows."""
        if len(self.features) < MIN_REFERENCE_ROWS:
            return None
        with self._lock:
            if variance_kept not in self._reconstruction:
                fit = ReconstructionDrift(variance_kept).fit(self.features)
                self._reconstruction[variance_kept] = fit
            return self._reconstruction[variance_kept]

    def loss_estimator(self, registry: Registry, info: VersionInfo) -> DirectLossEstimator | None:
        """DLE's loss models, fitted on the reference rows, their labels and the version's own
        predictions of them; ``None`` when the reference has no label."""
        if self.labels is None:
            return None
        with self._lock:
            if self._dle is None:
                _, predictor = registry.load(info.model, version=info.version)
                predictions = np.asarray(predictor.predict(self.features), dtype=np.float64)
                # one thread: OpenMP's threads on a busy machine make the small fit 10-20× slower
                with threadpool_limits(limits=1, user_api="openmp"):
                    self._dle = DirectLossEstimator(loss_model).fit(
                        self.features, predictions.reshape(len(self.features), -1)[:, 0],
                        self.labels,
                    )  # fmt: skip
            return self._dle


_cache: OrderedDict[tuple[str, str], VersionReference] = OrderedDict()
_cache_lock = threading.Lock()


def _candidates(s: Session, info: VersionInfo) -> list[MonitorProfile]:
    query = select(MonitorProfile).where(
        MonitorProfile.role == "reference", MonitorProfile.sample_digest.is_not(None)
    )
    pipeline, dataset = info.tags.get("reference_pipeline"), info.tags.get("reference_dataset")
    if pipeline and dataset:
        query = query.where(
            MonitorProfile.pipeline == str(pipeline), MonitorProfile.dataset == str(dataset)
        )
    elif info.run_id:
        query = query.where(MonitorProfile.run_id == info.run_id)
    else:
        return []
    return list(s.scalars(query.order_by(MonitorProfile.ts.desc(), MonitorProfile.id.desc())))


def version_reference(s: Session, registry: Registry, info: VersionInfo) -> VersionReference | None:
    """The version's reference rows (see the module's docstring), or ``None`` when none of the
    references it can be traced to kept a sample with every input of its signature."""
    names = list(info.signature.names or [])
    if not names:
        return None
    best: tuple[MonitorProfile, dict[str, Any]] | None = None
    for row in _candidates(s, info):
        assert row.sample_digest is not None
        key = (info.artifact_digest, row.sample_digest)
        with _cache_lock:
            if key in _cache:
                _cache.move_to_end(key)
                return _cache[key]
        sample = json.loads(registry.artifacts.get_bytes(row.sample_digest))
        if not set(names) <= set(sample.get("features", [])):
            continue
        if best is None or (sample.get("label") and not best[1].get("label")):
            best = (row, sample)
        if sample.get("label"):
            break
    if best is None:
        return None
    row, sample = best
    assert row.sample_digest is not None
    table = np.asarray(sample["rows"], dtype=np.float64).reshape(-1, len(sample["columns"]))
    index = {c: j for j, c in enumerate(sample["columns"])}
    label = sample.get("label")
    labels = table[:, index[label]] if label else None
    ref = VersionReference(
        row.pipeline,
        row.dataset,
        row.sample_digest,
        np.ascontiguousarray(table[:, [index[n] for n in names]]),
        labels,
    )
    with _cache_lock:
        _cache[(info.artifact_digest, row.sample_digest)] = ref
        while len(_cache) > CACHED_VERSIONS:
            _cache.popitem(last=False)
    return ref
