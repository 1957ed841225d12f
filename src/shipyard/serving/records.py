"""What the model servers flushed, read through functions rather than through the tables.

This module is the one reader of ``shipyard.store.serving``'s windows, predictions and late
labels for every other service: deploy's canary judge
(:func:`shipyard.deploy.canary.arm_from_store`) and diagnosis, and the serving monitors
(:mod:`shipyard.monitoring.serving`). Each function runs in the caller's session, so a caller
that decides inside a transaction (the rollout engine) reads what it decides on in that same
transaction, and returns frozen views, never ORM rows.

**One interval convention.** Intervals are half-open, ``(since, until]``: a window belongs to the
interval its *end* falls in, a prediction to the interval its timestamp falls in. So a window
that ends exactly on a boundary ``t`` counts in the interval that ends at ``t`` and not in the
one that starts there, consecutive intervals never count one twice, and a window flushed at
``now`` is already in ``(now - period, now]``. ``until=None`` reaches to the end of time.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from shipyard.store.serving import FeedbackRecord, PredictionRecord, ServingWindow, TracedRequest
from shipyard.store.tables import ArtifactRecord

if TYPE_CHECKING:
    from shipyard.artifacts import ArtifactStore

log = logging.getLogger("shipyard.serving")


@dataclass(frozen=True)
class FlushedWindow:
    """One worker's window of one version: counts, latency histogram, input/prediction profiles."""

    id: int
    """The window's row id, so that two reads can be matched window by window."""
    model: str
    version: int
    worker: str
    window_start: float
    window_end: float
    requests: int
    rows: int
    errors: int
    data_errors: int
    latency_s: dict[str, Any]
    input_profile: dict[str, Any] | None
    prediction_profile: dict[str, Any] | None


def _view(w: ServingWindow) -> FlushedWindow:
    return FlushedWindow(
        id=w.id,
        model=w.model,
        version=w.version,
        worker=w.worker,
        window_start=w.window_start,
        window_end=w.window_end,
        requests=w.requests,
        rows=w.rows,
        errors=w.errors,
        data_errors=w.data_errors,
        latency_s=dict(w.latency_s or {}),
        input_profile=w.input_profile,
        prediction_profile=w.prediction_profile,
    )


def _ended_in(since: float, until: float | None) -> list[ColumnElement[bool]]:
    """The convention, once: a window's end in ``(since, until]``."""
    ended = [ServingWindow.window_end > since]
    if until is not None:
        ended.append(ServingWindow.window_end <= until)
    return ended


def _stamped_in(since: float, until: float | None) -> list[ColumnElement[bool]]:
    """A logged prediction's timestamp in ``(since, until]``."""
    stamped = [PredictionRecord.ts > since]
    if until is not None:
        stamped.append(PredictionRecord.ts <= until)
    return stamped


def windows(
    s: Session, model: str, version: int | None, since: float, until: float | None = None
) -> list[FlushedWindow]:
    """The windows of ``version`` (every version if None) that ended in ``(since, until]``,
    oldest first."""
    query = select(ServingWindow).where(ServingWindow.model == model, *_ended_in(since, until))
    if version is not None:
        query = query.where(ServingWindow.version == version)
    return [_view(w) for w in s.scalars(query.order_by(ServingWindow.window_end, ServingWindow.id))]


def first_windows(s: Session, model: str, version: int, n: int) -> list[FlushedWindow]:
    """The ``n`` earliest-starting windows of ``version`` (a baseline of how it began)."""
    query = (
        select(ServingWindow)
        .where(ServingWindow.model == model, ServingWindow.version == version)
        .order_by(ServingWindow.window_start, ServingWindow.id)
        .limit(n)
    )
    return [_view(w) for w in s.scalars(query)]


def request_count(s: Session, model: str, since: float, until: float | None = None) -> int:
    """Requests to every version of ``model`` in the windows that ended in ``(since, until]``."""
    total = s.scalar(
        select(func.coalesce(func.sum(ServingWindow.requests), 0)).where(
            ServingWindow.model == model, *_ended_in(since, until)
        )
    )
    return int(total or 0)


def predictions(
    s: Session, model: str, version: int, since: float, until: float | None, limit: int
) -> list[Any]:
    """The logged predictions of ``version`` in ``(since, until]``, newest first, at most
    ``limit`` (each as logged: a list of the request's row predictions)."""
    return list(
        s.scalars(
            select(PredictionRecord.prediction)
            .where(
                PredictionRecord.model == model,
                PredictionRecord.version == version,
                *_stamped_in(since, until),
            )
            .order_by(PredictionRecord.ts.desc(), PredictionRecord.id.desc())
            .limit(limit)
        )
    )


def confidences(
    s: Session, model: str, version: int, since: float, until: float | None = None
) -> list[list[list[float]]]:
    """The class probabilities of ``version``'s requests in ``(since, until]`` that logged
    them (the server samples them): per request, one list of probabilities per row."""
    return [
        list(c)
        for c in s.scalars(
            select(PredictionRecord.confidence).where(
                PredictionRecord.model == model,
                PredictionRecord.version == version,
                PredictionRecord.confidence.is_not(None),
                *_stamped_in(since, until),
            )
        )
        if c
    ]


@dataclass(frozen=True)
class LabelledPrediction:
    """One request's logged prediction and the late labels that arrived for it."""

    prediction: list[Any]
    """The request's row predictions, as logged."""
    labels: list[Any]
    """Its labels, as posted (``POST …/feedback``); one per row when the caller got it right."""
    confidence: list[list[float]] | None
    """Its class probabilities per row, when the server sampled them."""


def labelled_predictions(
    s: Session,
    model: str,
    version: int,
    since: float,
    until: float | None = None,
    limit: int | None = None,
) -> list[LabelledPrediction]:
    """The requests of ``version`` in ``(since, until]`` whose late labels arrived, joined by
    request id; at most ``limit`` (every one if None)."""
    query = (
        select(PredictionRecord.prediction, PredictionRecord.confidence, FeedbackRecord.labels)
        .join(
            FeedbackRecord,
            (FeedbackRecord.model == PredictionRecord.model)
            & (FeedbackRecord.request_id == PredictionRecord.request_id),
        )
        .where(
            PredictionRecord.model == model,
            PredictionRecord.version == version,
            *_stamped_in(since, until),
        )
    )
    if limit is not None:
        query = query.limit(limit)
    return [
        LabelledPrediction(prediction=list(p), labels=list(y), confidence=c)
        for p, c, y in s.execute(query).all()
    ]


# -- the sampled request log ------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedInputs:
    """The answered requests of a version that the server sampled into its request log: their
    input rows and the prediction of each row (as many as the log kept of each request)."""

    rows: list[list[Any]]
    predictions: list[Any]
    requests: int
    files: int
    """Request-log artifacts read."""


def logged_inputs(
    s: Session,
    artifacts: ArtifactStore,
    model: str,
    version: int,
    since: float,
    until: float | None = None,
    max_rows: int = 10_000,
) -> LoggedInputs:
    """The input rows and row predictions of ``version``'s answered (HTTP 200) requests in the
    request-log files flushed in ``(since, until]``, newest file first, at most ``max_rows``.

    A file that cannot be read is logged and skipped; a request whose logged input and answer
    do not pair row by row is skipped."""
    import pyarrow.parquet as pq

    query = select(ArtifactRecord.digest, ArtifactRecord.meta).where(
        ArtifactRecord.created_at > since
    )
    if until is not None:
        query = query.where(ArtifactRecord.created_at <= until)
    rows: list[list[Any]] = []
    predictions: list[Any] = []
    requests = files = 0
    for digest, meta in s.execute(query.order_by(ArtifactRecord.created_at.desc())):
        meta = meta or {}
        if meta.get("kind") != "serving_request_log" or meta.get("model") != model:
            continue
        if int(meta.get("version", -1)) != version:
            continue
        try:
            table = pq.read_table(
                io.BytesIO(artifacts.get_bytes(digest)), columns=["status", "request", "response"]
            )
        except Exception as exc:
            log.warning("cannot read request log %s: %s", digest[:12], exc)
            continue
        files += 1
        for status, request, response in zip(
            *(table.column(c).to_pylist() for c in ("status", "request", "response")), strict=True
        ):
            if int(status) != 200 or not request or not response:
                continue
            x, y = json.loads(request), json.loads(response)
            if not isinstance(x, list) or not isinstance(y, list) or len(x) != len(y):
                continue
            rows += x
            predictions += [p[0] if isinstance(p, list) and p else p for p in y]
            requests += 1
            if len(rows) >= max_rows:
                return LoggedInputs(rows[:max_rows], predictions[:max_rows], requests, files)
    return LoggedInputs(rows, predictions, requests, files)


# -- the shadow log ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ShadowPairs:
    """What a shadow version answered to copies of the stable version's answered requests,
    row by row: the stable answer and the shadow's (None where the shadow failed)."""

    stable: list[Any]
    shadow: list[Any]
    errors: list[str]
    """The shadow's failure on each row it failed on (a request's failure on each of its rows)."""
    requests: int
    files: int
    first_ts: float | None
    """When the earliest pair read was copied (None: no pair)."""


def shadow_pairs(
    s: Session,
    artifacts: ArtifactStore,
    model: str,
    shadow: int,
    stable: int,
    since: float,
    until: float | None = None,
    max_rows: int = 10_000,
) -> ShadowPairs:
    """The pairs of the shadow log of ``shadow`` against ``stable``
    (:mod:`shipyard.serving.shadow`) in the files flushed in ``(since, until]``, oldest file
    first, at most ``max_rows`` rows. A request whose answers do not pair row by row is
    skipped; a file that cannot be read is logged and skipped."""
    import pyarrow.parquet as pq

    query = select(ArtifactRecord.digest, ArtifactRecord.meta).where(
        ArtifactRecord.created_at > since
    )
    if until is not None:
        query = query.where(ArtifactRecord.created_at <= until)
    stable_rows: list[Any] = []
    shadow_rows: list[Any] = []
    errors: list[str] = []
    requests = files = 0
    first_ts: float | None = None
    columns = ("request_id", "ts", "stable", "shadow", "error")
    for digest, meta in s.execute(query.order_by(ArtifactRecord.created_at)):
        meta = meta or {}
        if meta.get("kind") != "serving_shadow_log" or meta.get("model") != model:
            continue
        if int(meta.get("version", -1)) != shadow or int(meta.get("stable_version", -1)) != stable:
            continue
        try:
            table = pq.read_table(io.BytesIO(artifacts.get_bytes(digest)), columns=list(columns))
        except Exception as exc:
            log.warning("cannot read shadow log %s: %s", digest[:12], exc)
            continue
        files += 1
        for rid, ts, answered, copied, error in zip(
            *(table.column(c).to_pylist() for c in columns), strict=True
        ):
            y = _rows_of(answered)
            if not isinstance(y, list) or not y:
                continue
            got: Any = _rows_of(copied)
            if error is None and (not isinstance(got, list) or len(got) != len(y)):
                continue
            first_ts = ts if first_ts is None else min(first_ts, ts)
            requests += 1
            if error is not None:
                errors += [f"request {rid}: {error}"] * len(y)
                got = [None] * len(y)
            stable_rows += y
            shadow_rows += got
            if len(stable_rows) >= max_rows:
                failed = sum(v is None for v in shadow_rows[:max_rows])
                return ShadowPairs(
                    stable_rows[:max_rows], shadow_rows[:max_rows], errors[:failed], requests,
                    files, first_ts,
                )  # fmt: skip
    return ShadowPairs(stable_rows, shadow_rows, errors, requests, files, first_ts)


def _rows_of(cell: Any) -> Any:
    """A shadow-log cell's rows: an Arrow list read back as a list, or JSON text (answers that
    are not numbers, and the logs written before numbers were kept as lists)."""
    if isinstance(cell, str):
        return json.loads(cell) if cell else None
    return cell


# -- traced requests (W3C trace ids) ----------------------------------------------------------


@dataclass(frozen=True)
class TracedCall:
    """A request whose trace a server kept, and the window it was flushed with."""

    trace_id: str
    span_id: str
    parent_id: str | None
    request_id: str
    model: str
    version: int
    worker: str
    window_start: float
    ts: float
    status: int
    latency_ms: float


def _traced(r: TracedRequest) -> TracedCall:
    return TracedCall(
        r.trace_id, r.span_id, r.parent_id, r.request_id, r.model, r.version,
        r.worker, r.window_start, r.ts, r.status, r.latency_ms,
    )  # fmt: skip


def worst_traces(
    s: Session, model: str, version: int, since: float, until: float | None, limit: int
) -> list[TracedCall]:
    """The traced requests of ``version`` in the windows that ended in ``(since, until]`` (the
    windows a canary look judges) that its verdict should name: failed and refused ones first
    (newest first), then the slowest."""
    query = (
        select(TracedRequest)
        .join(
            ServingWindow,
            (ServingWindow.worker == TracedRequest.worker)
            & (ServingWindow.model == TracedRequest.model)
            & (ServingWindow.version == TracedRequest.version)
            & (ServingWindow.window_start == TracedRequest.window_start),
        )
        .where(
            TracedRequest.model == model,
            TracedRequest.version == version,
            *_ended_in(since, until),
        )
    )
    failed = query.where(TracedRequest.status >= 400).order_by(TracedRequest.ts.desc())
    found = [_traced(r) for r in s.scalars(failed.limit(limit))]
    if len(found) < limit:
        slow = query.where(TracedRequest.status < 400).order_by(TracedRequest.latency_ms.desc())
        found += [_traced(r) for r in s.scalars(slow.limit(limit - len(found)))]
    return found


def trace_calls(s: Session, trace_id: str) -> list[TracedCall]:
    """Every request of one trace that a server kept, oldest first."""
    query = select(TracedRequest).where(TracedRequest.trace_id == trace_id)
    return [_traced(r) for r in s.scalars(query.order_by(TracedRequest.ts, TracedRequest.id))]


def window_of(s: Session, call: TracedCall) -> FlushedWindow | None:
    """The flushed window a traced request was written with."""
    row = s.scalar(
        select(ServingWindow).where(
            ServingWindow.worker == call.worker,
            ServingWindow.model == call.model,
            ServingWindow.version == call.version,
            ServingWindow.window_start == call.window_start,
        )
    )
    return _view(row) if row is not None else None
