"""Serving telemetry: what the request path records, and the thread that writes it.

Split by concern: :class:`~shipyard.serving.window.Window` accumulates one model version's
requests (``update``/``merge``), :mod:`shipyard.serving.window_store` writes a window in one
transaction, and :class:`~shipyard.serving.instrumentation.HttpInstruments` holds the worker's
Prometheus metrics. :class:`Telemetry` ties them to one worker: the request path costs a few
counter increments and list appends under one lock; a background thread swaps the windows every
``flush_interval_s`` and writes them, keeping a failed write to retry (at most
``MAX_PENDING_WINDOWS``), so a worker killed at any moment loses at most the window it was
filling and never leaves half a window.

It also says what went wrong with a request, in one structured line
(:mod:`shipyard.observability.logs`) with the request id, its W3C trace and span ids, the model
and the version: a refusal at ``info``, a failure at ``warning``, an answered request only at
``debug`` (a line per answer would cost throughput). A refused or failed request's trace is
kept with its window, and so is the trace of a request whose caller sent a ``traceparent``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.errors import ShipyardError
from shipyard.observability.tracecontext import TraceParent
from shipyard.registry import VersionInfo
from shipyard.serving.instrumentation import MULTIPROC_ENV, HttpInstruments
from shipyard.serving.window import LATENCY_BUCKETS_S, MAX_ROWS_PER_WINDOW, Traced, Window
from shipyard.serving.window_store import write_window

if TYPE_CHECKING:
    from shipyard.artifacts import ArtifactStore
    from shipyard.store import Store

__all__ = [
    "LATENCY_BUCKETS_S",
    "MAX_PENDING_WINDOWS",
    "MAX_ROWS_PER_WINDOW",
    "MULTIPROC_ENV",
    "SAMPLE_MAX_ROWS",
    "Telemetry",
    "Window",
]

log = logging.getLogger("shipyard.serving")

MAX_PENDING_WINDOWS = 20
SAMPLE_MAX_ROWS = 100
"""Rows of a sampled request kept in the request log: encoding all of a maximum-size request
(12,000 rows) held the GIL for tens of milliseconds on the request path, and the log's readers
(the canary diagnosis replays requests against the stable version) need examples, not volume.
The request's and the answer's first rows are kept alike, so a replay still pairs them."""

Flushable = tuple[str, int, Window, float]
"""(model, version, window, end)"""


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
        self.instruments = HttpInstruments()
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, int], Window] = {}
        self._pending: list[Flushable] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._random = random.Random()

    # the instruments, under the names the app and the tests use
    @property
    def registry(self) -> Any:
        return self.instruments.registry

    @property
    def requests_total(self) -> Any:
        return self.instruments.requests_total

    @property
    def errors_total(self) -> Any:
        return self.instruments.errors_total

    def exposition(self) -> bytes:
        """``/metrics``: this worker's metrics, or every worker's in multiprocess mode."""
        return self.instruments.exposition()

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

    def ok(
        self,
        info: VersionInfo,
        x: np.ndarray[Any, Any],
        predictions: np.ndarray[Any, Any],
        proba: np.ndarray[Any, Any] | None,
        latency_s: float,
        request_id: str,
        trace: TraceParent | None = None,
        parent: TraceParent | None = None,
    ) -> None:
        """One answered request; ``trace`` is this server's span of it, ``parent`` the
        caller's (None when the caller sent no valid ``traceparent``)."""
        self.instruments.ok(info.model, info.version, latency_s)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("answered", extra=_fields(info, request_id, trace, parent, 200, latency_s))
        if not self.enabled:
            return
        now = self.clock.time()
        sample = None
        if self.sample_rate and self._random.random() < self.sample_rate:
            sample = {
                "request_id": request_id,
                "trace_id": trace.trace_id if trace is not None else None,
                "ts": now,
                "status": 200,
                "request": json.dumps(x[:SAMPLE_MAX_ROWS].tolist(), default=str),
                "response": json.dumps(predictions[:SAMPLE_MAX_ROWS].tolist(), default=str),
            }
        traced = (
            _traced(trace, parent, request_id, now, 200, latency_s)
            if trace is not None and parent is not None
            else None
        )
        with self._lock:
            window = self._window(info)
            window.update_ok(x, (request_id, now, predictions, proba), latency_s, sample, traced)

    def error(
        self,
        info: VersionInfo,
        kind: str,
        status: int,
        latency_s: float,
        request_id: str,
        message: str,
        trace: TraceParent | None = None,
        parent: TraceParent | None = None,
    ) -> None:
        """One refused (``kind="data"``) or failed request: counted, logged, its trace kept."""
        self.instruments.error(info.model, info.version, status, kind)
        fields = _fields(info, request_id, trace, parent, status, latency_s)
        if kind == "data":
            log.info("refused: %s", message, extra=fields)
        else:
            log.warning("failed: %s", message, extra=fields)
        if not self.enabled:
            return
        now = self.clock.time()
        sample = {
            "request_id": request_id,
            "trace_id": trace.trace_id if trace is not None else None,
            "ts": now,
            "status": status,
            "request": "",
            "response": message,
        }
        traced = (
            _traced(trace, parent, request_id, now, status, latency_s)
            if trace is not None
            else None
        )
        with self._lock:
            self._window(info).update_error(kind, latency_s, sample, traced)

    # -- the background flush ------------------------------------------------------------------
    def swap(self) -> list[Flushable]:
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
        for i, (model, version, window, end) in enumerate(todo):
            try:
                write_window(self.store, self.artifacts, self.worker, model, version, window, end)
                written += 1
            except IntegrityError:
                written += 1  # already there: a retry of a flush whose reply was lost
            except (SQLAlchemyError, ShipyardError, OSError) as exc:
                log.warning("serving window flush failed, will retry: %s", exc)
                self._pending = todo[i:][-MAX_PENDING_WINDOWS:]
                break
        return written

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


def _fields(
    info: VersionInfo,
    request_id: str,
    trace: TraceParent | None,
    parent: TraceParent | None,
    status: int,
    latency_s: float,
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "request_id": request_id,
        "model": info.model,
        "version": info.version,
        "status": status,
        "latency_ms": round(latency_s * 1000.0, 3),
    }
    if trace is not None:
        fields["trace_id"] = trace.trace_id
        fields["span_id"] = trace.span_id
    if parent is not None:
        fields["parent_id"] = parent.span_id  # the caller's span, from its traceparent
    return fields


def _traced(
    trace: TraceParent,
    parent: TraceParent | None,
    request_id: str,
    now: float,
    status: int,
    latency_s: float,
) -> Traced:
    return (
        trace.trace_id,
        trace.span_id,
        parent.span_id if parent is not None else None,
        request_id,
        now,
        status,
        latency_s * 1000.0,
    )
