"""Shadow traffic: a copy of a share of the answered requests goes to a shadow version.

During a release's shadow stage the traffic split names a shadow version and a share
(:mod:`shipyard.serving.split`); every user is answered by the stable version as before. After
the stable version has answered, :meth:`ShadowCopies.offer` puts a copy of the request (its
input rows and the stable answer) on a bounded in-process queue — a non-blocking put, nothing
else on the request path — and one background thread drains it: the shadow version predicts the
same rows, and the pair (stable answer, shadow answer or failure) joins a batch that is written
to the **shadow log** every ``flush_interval_s`` (Parquet artifacts of kind
``serving_shadow_log``, read back by :func:`shipyard.serving.records.shadow_pairs`). A full
queue drops the copy and counts it: the user is never made to wait for the shadow.

The shadow thread shares the worker's GIL with the requests, so it works in batches: it waits
``BATCH_WAIT_S`` after a copy arrives, then answers every waiting copy (up to
``MAX_BATCH_ROWS`` rows) with one ``predict`` per row shape — a model's per-call overhead is
paid once per batch, not per request — and offers the GIL back between steps. Rows are
answered as a batch where the stable version answered them one request at a time: the same
answer for any model that answers each row on its own (every flavor Shipyard serves); where
the batch fails, each copy is answered alone, so a failure is the copy's own.

Counted on the worker's ``/metrics`` as ``shipyard_http_shadow_copies_total{model, version,
outcome}`` (``answered``, ``failed``, ``dropped``; ``version`` is the shadow's).

The share is exact, not sampled: a running sum adds ``shadow_pct / 100`` per answered request
and copies one whenever it reaches 1, so 100 % copies every request and 25 % every fourth.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter

from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.metrics import SHADOW_COPIES

if TYPE_CHECKING:
    from shipyard.artifacts import ArtifactStore
    from shipyard.serving.live import LiveModels, Loaded
    from shipyard.store import Store

log = logging.getLogger("shipyard.serving")

SHADOW_LOG_KIND = "serving_shadow_log"
SHADOW_LOG_MEDIA_TYPE = "application/vnd.apache.parquet"
MAX_ROWS_PER_COPY = 100
"""A copy keeps at most this many rows of a request (the judge pairs rows, not requests)."""
BATCH_WAIT_S = 0.1
"""The drain waits this long after a copy arrives, so that copies are answered in batches."""
MAX_BATCH_ROWS = 512
YIELD_EVERY = 4
"""Copies logged between two offers of the GIL to the requests."""


Answered = tuple["np.ndarray[Any, Any] | None", "str | None"]
"""The shadow's answer to one copy's rows, or its failure."""


@dataclass(frozen=True, slots=True)
class ShadowCopy:
    """One answered request on its way to the shadow version."""

    model: str
    stable_version: int
    shadow: Loaded
    request_id: str
    ts: float
    x: np.ndarray[Any, Any]
    stable_answer: np.ndarray[Any, Any]


@dataclass(frozen=True, slots=True)
class ShadowPair:
    """What the shadow version did with one copy."""

    request_id: str
    ts: float
    request: str
    stable: str
    shadow: str | None
    error: str | None
    shadow_ms: float


class ShadowCopies:
    """The bounded queue of copies, its drain thread and the batched shadow log.

    ``capacity`` copies wait at most; ``store`` and ``artifacts`` receive the shadow log (none:
    the copies are answered and counted, not logged)."""

    def __init__(
        self,
        live: LiveModels,
        registry: CollectorRegistry,
        store: Store | None,
        artifacts: ArtifactStore | None,
        *,
        capacity: int = 1000,
        flush_interval_s: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be ≥ 1")
        self.live = live
        self.store = store
        self.artifacts = artifacts
        self.flush_interval_s = flush_interval_s
        self.clock = clock
        self.copies = Counter(
            SHADOW_COPIES.name, SHADOW_COPIES.help, SHADOW_COPIES.labels, registry=registry
        )
        self.queue: queue.Queue[ShadowCopy | None] = queue.Queue(maxsize=capacity)
        self._tick: dict[str, float] = {}
        self._batch: dict[tuple[str, int, int], list[ShadowPair]] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False

    # -- the request path: a lookup, a sum and a non-blocking put ------------------------------
    def offer(
        self,
        loaded: Loaded,
        x: np.ndarray[Any, Any],
        predictions: np.ndarray[Any, Any],
        request_id: str,
    ) -> None:
        """After ``loaded`` answered a request: copy it to the model's shadow when the share
        says so. Never raises and never blocks."""
        route = self.live.routes.get(loaded.model)
        if route is None or route.shadow is None or route.shadow.version == loaded.version:
            return
        if loaded.version == route.canary:
            return  # the shadow is judged against the stable version's answers only
        model = loaded.model
        tick = self._tick.get(model, 0.0) + route.shadow_pct / 100.0
        if tick < 1.0 - 1e-9:
            self._tick[model] = tick
            return
        self._tick[model] = tick - 1.0
        item = ShadowCopy(
            model, loaded.version, route.shadow, request_id, self.clock.time(), x, predictions
        )
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self.copies.labels(model, str(route.shadow.version), "dropped").inc()

    # -- the drain thread -----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        if self.store is not None:
            import pyarrow.parquet  # noqa: F401 - imported now, not on the first flush

        self._thread = threading.Thread(target=self._drain, name="shipyard-shadow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Answer what is queued, write the last batch, stop the thread."""
        if self._thread is None:
            return
        self._stopping = True
        with contextlib.suppress(queue.Full):  # the thread then ends once the queue is empty
            self.queue.put(None, timeout=5)
        self._thread.join(timeout=10)
        self._thread = None
        self.flush()

    def _drain(self) -> None:
        next_flush = time.monotonic() + self.flush_interval_s
        while True:
            try:
                first = self.queue.get(timeout=max(0.0, next_flush - time.monotonic()))
            except queue.Empty:
                if self._stopping:
                    return
                self._flush_safely()
                next_flush = time.monotonic() + self.flush_interval_s
                continue
            if first is None:
                return
            if not self._stopping:
                time.sleep(BATCH_WAIT_S)  # let copies gather: one predict answers many
            items, last = self._take(first)
            try:
                self._answer(items)
            except Exception as exc:  # never let the shadow take the worker down
                log.error("shadow copies of %d request(s) failed: %s", len(items), exc)
            if last:
                return
            if time.monotonic() >= next_flush:
                self._flush_safely()
                next_flush = time.monotonic() + self.flush_interval_s

    def _take(self, first: ShadowCopy) -> tuple[list[ShadowCopy], bool]:
        """``first`` and what waits behind it, up to ``MAX_BATCH_ROWS`` rows; whether the stop
        sentinel came next."""
        items = [first]
        rows = min(len(first.x), MAX_ROWS_PER_COPY)
        while rows < MAX_BATCH_ROWS:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return items, False
            if item is None:
                return items, True
            items.append(item)
            rows += min(len(item.x), MAX_ROWS_PER_COPY)
        return items, False

    def _answer(self, items: list[ShadowCopy]) -> None:
        """The shadow's answers to a batch of copies: one predict per shadow version and row
        shape; each copy on its own where the batch fails, so a failure is the copy's."""
        groups: dict[tuple[int, tuple[int, ...]], list[ShadowCopy]] = {}
        for item in items:
            groups.setdefault((id(item.shadow), item.x.shape[1:]), []).append(item)
        for group in groups.values():
            shadow = group[0].shadow
            xs = [item.x[:MAX_ROWS_PER_COPY] for item in group]
            began = time.perf_counter()
            try:
                got = _checked(shadow.predictor.predict(np.concatenate(xs)), sum(map(len, xs)))
                bounds = np.cumsum([len(x) for x in xs])[:-1]
                answers: list[Answered] = [
                    (part, _not_finite(part)) for part in np.split(got, bounds)
                ]
            except Exception:
                answers = [_alone(shadow, x) for x in xs]
            took_ms = (time.perf_counter() - began) * 1000.0 / len(group)
            self._record(group, xs, answers, took_ms)
            time.sleep(0)  # let a request waiting for the GIL have it

    def _record(
        self,
        group: list[ShadowCopy],
        xs: list[np.ndarray[Any, Any]],
        answers: list[Answered],
        took_ms: float,
    ) -> None:
        first = group[0]
        version = str(first.shadow.version)
        failed = sum(error is not None for _, error in answers)
        if failed:
            self.copies.labels(first.model, version, "failed").inc(failed)
        if len(group) > failed:
            self.copies.labels(first.model, version, "answered").inc(len(group) - failed)
        if self.store is None or self.artifacts is None:
            return
        for i, (item, x, (got, error)) in enumerate(zip(group, xs, answers, strict=True)):
            stable = np.asarray(item.stable_answer)[:MAX_ROWS_PER_COPY]
            answer = (
                json.dumps(got.tolist(), default=str) if got is not None and not error else None
            )
            pair = ShadowPair(
                item.request_id,
                item.ts,
                json.dumps(x.tolist(), default=str),
                json.dumps(stable.tolist(), default=str),
                answer,
                error,
                took_ms,
            )
            key = (item.model, item.stable_version, item.shadow.version)
            self._batch.setdefault(key, []).append(pair)
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                time.sleep(0)

    # -- the shadow log -------------------------------------------------------------------------
    def _flush_safely(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # the store may be away: keep the batch, try again later
            log.warning("shadow log flush failed, will retry: %s", exc)

    def flush(self) -> int:
        """Write every waiting batch as one artifact per (model, stable, shadow); returns the
        pairs written. Called by the drain thread only (and by :meth:`stop` after it ended)."""
        if self.store is None or self.artifacts is None or not self._batch:
            return 0
        written = 0
        for key in list(self._batch):
            model, stable, shadow = key
            pairs = self._batch[key]
            with self.store.session(immediate=True) as s:
                self.artifacts.put_bytes(
                    _parquet(pairs),
                    SHADOW_LOG_MEDIA_TYPE,
                    {
                        "kind": SHADOW_LOG_KIND,
                        "model": model,
                        "version": shadow,
                        "stable_version": stable,
                        "rows": len(pairs),
                        "first_ts": min(p.ts for p in pairs),
                    },
                    session=s,
                )
            del self._batch[key]
            written += len(pairs)
        return written


def _checked(values: Any, rows: int) -> np.ndarray[Any, Any]:
    got = np.asarray(values)
    if got.ndim == 0 or got.shape[0] != rows:
        raise ValueError(f"answered {got.shape} for {rows} row(s)")
    return got


def _not_finite(got: np.ndarray[Any, Any]) -> str | None:
    if got.dtype.kind == "f" and not np.isfinite(got).all():
        return "ValueError: answered a value that is not finite"
    return None


def _alone(shadow: Loaded, x: np.ndarray[Any, Any]) -> Answered:
    """One copy's answer on its own, or its failure."""
    try:
        got = _checked(shadow.predictor.predict(x), len(x))
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"[:300]
    return got, _not_finite(got)


def _parquet(pairs: list[ShadowPair]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "request_id": [p.request_id for p in pairs],
            "ts": [p.ts for p in pairs],
            "request": [p.request for p in pairs],
            "stable": [p.stable for p in pairs],
            "shadow": [p.shadow for p in pairs],
            "error": [p.error for p in pairs],
            "shadow_ms": [p.shadow_ms if math.isfinite(p.shadow_ms) else None for p in pairs],
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()
