"""Serving telemetry that costs the request path only a few list appends.

Each worker folds every request into an in-memory :class:`Window` per (model, version): counts,
a latency histogram, the validated inputs and the predictions. A background thread swaps the
windows every ``flush_interval_s`` and writes each one to the store in **one transaction**
(window row, its logged predictions, its sampled raw requests as a Parquet artifact), so a worker
killed at any moment loses at most the window it was filling and never leaves half a window.
Profiles of inputs and predictions (the statistics wing's mergeable ``DatasetProfile``) are built
in that thread, not on the request path.

The same transaction adds the window's counts to the cumulative ``shipyard_serving_requests_total``
and ``shipyard_serving_errors_total`` series that the error-budget alert rules read
(:mod:`shipyard.serving.counters`).

Prometheus metrics (``/metrics``) are kept per app in their own ``CollectorRegistry``; under
``shipyard serve --workers N`` prometheus-client's multiprocess mode sums every worker's. They
are the per-request ``shipyard_http_*`` instruments of the metric catalogue
(:mod:`shipyard.metrics`), distinct from the store's per-version ``shipyard_serving_*`` series.
"""

from __future__ import annotations

import bisect
import io
import json
import logging
import os
import random
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Table, insert
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.errors import ShipyardError
from shipyard.metrics import HTTP_REQUEST_DURATION, HTTP_REQUEST_ERRORS, HTTP_REQUESTS
from shipyard.registry import PREDICTION_COLUMN, VersionInfo
from shipyard.serving.counters import add_window_counts
from shipyard.stats.latency import LatencyHistogram
from shipyard.store.serving import PredictionRecord, ServingWindow

if TYPE_CHECKING:
    from shipyard.artifacts import ArtifactStore
    from shipyard.store import Store

log = logging.getLogger("shipyard.serving")

LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MAX_ROWS_PER_WINDOW = 50_000
MAX_PENDING_WINDOWS = 20
REQUEST_LOG_MEDIA_TYPE = "application/vnd.apache.parquet"
PREDICTIONS = cast(Table, PredictionRecord.__table__)  # Core insert: no ORM bookkeeping per row


@dataclass
class Window:
    """What one worker saw for one model version since the last flush."""

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
    predictions: list[tuple[str, float, np.ndarray[Any, Any], np.ndarray[Any, Any] | None]] = field(
        default_factory=list
    )
    samples: list[dict[str, Any]] = field(default_factory=list)

    def observe_latency(self, seconds: float) -> None:
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.latency_sum_s += seconds
        self.latency_fine.update(seconds)


def latency_json(window: Window) -> dict[str, Any]:
    return {
        "buckets_s": list(LATENCY_BUCKETS_S),
        "counts": list(window.latency_counts),
        "sum_s": window.latency_sum_s,
        "log": window.latency_fine.to_json(),  # canary analysis judges latency on these bins
    }


def _summary(values: np.ndarray[Any, Any], names: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if values.dtype.kind not in "fiub":
        return out
    for j, name in enumerate(names):
        col = values[:, j].astype(np.float64)
        ok = col[np.isfinite(col)]
        out[name] = {
            "count": int(col.size),
            "missing": int(col.size - ok.size),
            "mean": float(ok.mean()) if ok.size else None,
            "std": float(ok.std()) if ok.size else None,
            "min": float(ok.min()) if ok.size else None,
            "max": float(ok.max()) if ok.size else None,
        }
    return out


def _profiles(
    x: np.ndarray[Any, Any], preds: np.ndarray[Any, Any], w: Window
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Input and prediction profiles, binned on the version's reference profile when it has one.

    Binning on the same edges is what lets windows from several workers and several flushes
    merge into one profile (see :meth:`shipyard.stats.DatasetProfile.merge`).
    """
    import pandas as pd

    from shipyard.stats import DatasetProfile

    names = list(w.columns)
    ref = DatasetProfile.from_json(w.reference) if w.reference else None
    try:
        inputs = None
        if len(x):
            ref_inputs = (
                DatasetProfile({n: ref.columns[n] for n in names if n in ref.columns}, ref.rows)
                if ref is not None
                else None
            )
            inputs = DatasetProfile.from_frame(
                pd.DataFrame(x, columns=names), reference=ref_inputs
            ).to_json()
        predictions = None
        if preds.size:
            ref_preds = (
                DatasetProfile({PREDICTION_COLUMN: ref.columns[PREDICTION_COLUMN]}, ref.rows)
                if ref is not None and PREDICTION_COLUMN in ref.columns
                else None
            )
            predictions = DatasetProfile.from_frame(
                pd.DataFrame({PREDICTION_COLUMN: preds}), reference=ref_preds
            ).to_json()
    except Exception as exc:  # a profile is telemetry: never let it stop a flush
        log.warning("cannot profile a serving window: %s", exc)
        return None, None
    return inputs, predictions


class Telemetry:
    """Windows, Prometheus metrics and the background flush of one worker."""

    def __init__(
        self,
        store: Store | None,
        artifacts: ArtifactStore | None,
        *,
        enabled: bool = True,
        flush_interval_s: float = 5.0,
        sample_rate: float = 0.01,
        clock: Clock = SYSTEM_CLOCK,
        worker: str | None = None,
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.enabled = enabled and store is not None
        self.flush_interval_s = flush_interval_s
        self.sample_rate = sample_rate
        self.clock = clock
        self.worker = worker or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, int], Window] = {}
        self._pending: list[tuple[str, int, Window, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._random = random.Random()
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
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
        # prometheus-client picks its value class from the environment when it is imported
        multiprocess = values.ValueClass is not values.MutexValue
        self._multiprocess_dir = os.environ.get(MULTIPROC_ENV) if multiprocess else None

    def exposition(self) -> bytes:
        """``/metrics``: this worker's metrics, or every worker's in multiprocess mode."""
        if self._multiprocess_dir is None:
            return bytes(generate_latest(self.registry))
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self._multiprocess_dir)
        return bytes(generate_latest(merged))

    # -- the request path ----------------------------------------------------------------------
    def _window(self, info: VersionInfo) -> Window:
        key = (info.model, info.version)
        w = self._windows.get(key)
        if w is None:
            w = Window(
                self.clock.time(),
                info.model,
                info.version,
                info.signature.names,
                info.reference_profile,
            )
            self._windows[key] = w
        return w

    def _prom(self, model: str, version: int) -> tuple[Any, Any]:
        key = (model, version)
        got = self._children.get(key)
        if got is None:
            v = str(version)
            got = (self.requests_total.labels(model, v, "200"), self.duration.labels(model, v))
            self._children[key] = got
        return got

    def ok(
        self,
        info: VersionInfo,
        x: np.ndarray[Any, Any],
        predictions: np.ndarray[Any, Any],
        proba: np.ndarray[Any, Any] | None,
        latency_s: float,
        request_id: str,
    ) -> None:
        counter, hist = self._prom(info.model, info.version)
        counter.inc()
        hist.observe(latency_s)
        if not self.enabled:
            return
        with self._lock:
            w = self._window(info)
            w.requests += 1
            w.rows += len(x)
            w.observe_latency(latency_s)
            if w.rows <= MAX_ROWS_PER_WINDOW:
                w.inputs.append(x)
                w.predictions.append((request_id, self.clock.time(), predictions, proba))
            if self.sample_rate and self._random.random() < self.sample_rate:
                w.samples.append(
                    {
                        "request_id": request_id,
                        "ts": self.clock.time(),
                        "status": 200,
                        "request": json.dumps(x.tolist(), default=str),
                        "response": json.dumps(predictions.tolist(), default=str),
                    }
                )

    def error(
        self,
        info: VersionInfo,
        kind: str,
        status: int,
        latency_s: float,
        request_id: str,
        message: str,
    ) -> None:
        v = str(info.version)
        self.requests_total.labels(info.model, v, str(status)).inc()
        self.errors_total.labels(info.model, v, kind).inc()
        if not self.enabled:
            return
        with self._lock:
            w = self._window(info)
            w.requests += 1
            w.observe_latency(latency_s)
            if kind == "data":
                w.data_errors += 1
            else:
                w.errors += 1
            if len(w.samples) < 1000:  # failures are always worth a sample, within reason
                w.samples.append(
                    {
                        "request_id": request_id,
                        "ts": self.clock.time(),
                        "status": status,
                        "request": "",
                        "response": message,
                    }
                )

    # -- the background flush ------------------------------------------------------------------
    def swap(self) -> list[tuple[str, int, Window, float]]:
        """Take the current windows (ending now) out of the request path's reach."""
        now = self.clock.time()
        with self._lock:
            taken, self._windows = self._windows, {}
        return [(m, v, w, now) for (m, v), w in taken.items()]

    def flush(self) -> int:
        """Write every finished window; returns how many were written."""
        if not self.enabled or self.store is None:
            return 0
        todo = self._pending + self.swap()
        self._pending = []
        written = 0
        for i, item in enumerate(todo):
            try:
                self._write(*item)
                written += 1
            except IntegrityError:
                written += 1  # already there: a retry of a flush whose reply was lost
            except (SQLAlchemyError, ShipyardError, OSError) as exc:
                log.warning("serving window flush failed, will retry: %s", exc)
                self._pending = todo[i:][-MAX_PENDING_WINDOWS:]
                break
        return written

    def _write(self, model: str, version: int, w: Window, end: float) -> None:
        assert self.store is not None
        x = np.concatenate(w.inputs) if w.inputs else np.empty((0, len(w.columns)))
        preds = (
            np.concatenate(
                [np.asarray(p).reshape(len(p), -1)[:, 0] for _, _, p, _ in w.predictions]
            )
            if w.predictions
            else np.empty(0)
        )
        summary: dict[str, Any] = {"inputs": _summary(x, w.columns) if len(x) else {}}
        if preds.size and preds.dtype.kind in "fiub":
            values, counts = np.unique(preds, return_counts=True)
            summary["predictions"] = (
                {str(v): int(c) for v, c in zip(values.tolist(), counts.tolist(), strict=True)}
                if values.size <= 50
                else {"mean": float(preds.mean())}
            )
        input_profile, prediction_profile = _profiles(x, preds, w)
        with self.store.session(immediate=True) as s:
            s.add(
                ServingWindow(
                    model=model,
                    version=version,
                    worker=self.worker,
                    window_start=w.start,
                    window_end=end,
                    requests=w.requests,
                    rows=w.rows,
                    errors=w.errors,
                    data_errors=w.data_errors,
                    latency_s=latency_json(w),
                    input_profile=input_profile,
                    prediction_profile=prediction_profile,
                    summary=summary,
                )
            )
            if w.predictions:
                s.execute(insert(PREDICTIONS), _prediction_rows(w, preds))
            if w.samples and self.artifacts is not None:
                self.artifacts.put_bytes(
                    _parquet(w.samples, model, version),
                    REQUEST_LOG_MEDIA_TYPE,
                    {
                        "kind": "serving_request_log",
                        "model": model,
                        "version": version,
                        "window_start": w.start,
                        "rows": len(w.samples),
                    },
                    session=s,
                )
            add_window_counts(
                s, self.store.dialect, model, version,
                requests=w.requests, errors=w.errors, data_errors=w.data_errors,
                start=w.start, end=end,
            )  # fmt: skip

    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        import pyarrow.parquet  # noqa: F401 - import the flush's dependencies now, not mid-traffic

        import shipyard.stats  # noqa: F401

        self._thread = threading.Thread(target=self._loop, name="shipyard-flush", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            try:
                self.flush()
            except Exception as exc:  # never let telemetry take the worker down
                log.error("serving telemetry flush crashed: %s", exc)

    def stop(self) -> None:
        """Stop the thread and write what is left (a clean shutdown loses nothing)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        try:
            self.flush()
        except Exception as exc:
            log.error("final serving telemetry flush failed: %s", exc)


def _prediction_rows(w: Window, flat: np.ndarray[Any, Any]) -> list[dict[str, Any]]:
    """One row per request, built from one ``tolist`` of all the window's predictions."""
    values = flat.tolist()
    rows, offset = [], 0
    for rid, ts, p, pr in w.predictions:
        n = len(p)
        rows.append(
            {
                "request_id": rid,
                "model": w.model,
                "version": w.version,
                "ts": ts,
                "prediction": values[offset : offset + n],
                "confidence": None if pr is None else pr.tolist(),
            }
        )
        offset += n
    return rows


def _parquet(samples: list[dict[str, Any]], model: str, version: int) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "request_id": [r["request_id"] for r in samples],
            "ts": [r["ts"] for r in samples],
            "model": [model] * len(samples),
            "version": [version] * len(samples),
            "status": [r["status"] for r in samples],
            "request": [r["request"] for r in samples],
            "response": [r["response"] for r in samples],
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()
