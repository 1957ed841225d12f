"""What the model servers flushed, read through functions rather than through the tables.

Other services (deploy's canary analysis and diagnosis, monitors) ask here for a version's
flushed windows, its logged predictions and the predictions whose late labels arrived, over an
interval. Each function runs in the caller's session, so a caller that decides inside a
transaction (the rollout engine) reads what it decides on in that same transaction.

Intervals are half-open, ``(since, until]``: a window belongs to the interval its end falls in,
a prediction to the interval its timestamp falls in, so consecutive intervals never count one
twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shipyard.store.serving import FeedbackRecord, PredictionRecord, ServingWindow


@dataclass(frozen=True)
class FlushedWindow:
    """One worker's window of one version: counts, latency histogram, input/prediction profiles."""

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


def windows(
    s: Session, model: str, version: int | None, since: float, until: float | None = None
) -> list[FlushedWindow]:
    """The windows of ``version`` (every version if None) that ended in ``(since, until]``,
    oldest first."""
    query = select(ServingWindow).where(
        ServingWindow.model == model, ServingWindow.window_end > since
    )
    if version is not None:
        query = query.where(ServingWindow.version == version)
    if until is not None:
        query = query.where(ServingWindow.window_end <= until)
    return [
        FlushedWindow(
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
        for w in s.scalars(query.order_by(ServingWindow.window_end, ServingWindow.id))
    ]


def predictions(
    s: Session, model: str, version: int, since: float, until: float, limit: int
) -> list[Any]:
    """The logged predictions of ``version`` in ``(since, until]``, newest first, at most
    ``limit`` (each as logged: a list of the request's row predictions)."""
    return list(
        s.scalars(
            select(PredictionRecord.prediction)
            .where(
                PredictionRecord.model == model,
                PredictionRecord.version == version,
                PredictionRecord.ts > since,
                PredictionRecord.ts <= until,
            )
            .order_by(PredictionRecord.ts.desc(), PredictionRecord.id.desc())
            .limit(limit)
        )
    )


def labelled_predictions(
    s: Session, model: str, version: int, since: float, until: float, limit: int
) -> list[tuple[Any, Any]]:
    """(prediction, late labels) of ``version``'s requests in ``(since, until]`` whose labels
    arrived (``POST …/feedback``), joined by request id; at most ``limit``."""
    rows = s.execute(
        select(PredictionRecord.prediction, FeedbackRecord.labels)
        .join(
            FeedbackRecord,
            (FeedbackRecord.model == PredictionRecord.model)
            & (FeedbackRecord.request_id == PredictionRecord.request_id),
        )
        .where(
            PredictionRecord.model == model,
            PredictionRecord.version == version,
            PredictionRecord.ts > since,
            PredictionRecord.ts <= until,
        )
        .limit(limit)
    ).all()
    return [(p, y) for p, y in rows]
