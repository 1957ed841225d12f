"""The serving counters in the store: cumulative requests and errors per model version.

Every flushed window adds its counts to three series with one label set, ``{model, version}``:

- ``shipyard_serving_requests_total`` — requests answered (any status);
- ``shipyard_serving_errors_total`` — requests the server failed (HTTP 5xx: the model raised);
- ``shipyard_serving_data_errors_total`` — requests refused for bad input (HTTP 4xx: missing,
  corrupted or wrongly typed values). Bad input is the client's error: it does not spend the
  availability budget, it is a data-type problem (the ``ServingBadInput`` rule).

These are what the default ``ErrorBudgetBurn`` and ``ServingBadInput`` rules read
(:mod:`shipyard.alerting.rules`: ``Δerrors / Δrequests`` over a window, series matched by
identical labels). A rule evaluates each series on its own, so a series counts *all* workers
and replicas, not one worker: each flush adds its window to the newest point of the series,
inside the window's own transaction and under a lock per series (``BEGIN IMMEDIATE`` on
SQLite, an advisory transaction lock on PostgreSQL), so the values only grow and no flush is
counted twice or lost. A series' first point is a zero at the start of its first window, so
the first window's counts count (a counter is created at 0, as in Prometheus).
"""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from shipyard.store.tables import MetricPoint, labels_key

REQUESTS_TOTAL = "shipyard_serving_requests_total"
ERRORS_TOTAL = "shipyard_serving_errors_total"
DATA_ERRORS_TOTAL = "shipyard_serving_data_errors_total"
COUNTERS = (REQUESTS_TOTAL, ERRORS_TOTAL, DATA_ERRORS_TOTAL)


def counter_labels(model: str, version: int) -> dict[str, str]:
    return {"model": model, "version": str(version)}


def add_window_counts(
    s: Session,
    dialect: str,
    model: str,
    version: int,
    *,
    requests: int,
    errors: int,
    data_errors: int,
    start: float,
    end: float,
) -> tuple[float, float, float]:
    """Add one window's counts to the version's counters inside the caller's transaction.

    Returns the new (requests_total, errors_total, data_errors_total).
    """
    labels = counter_labels(model, version)
    key = labels_key(labels)
    if dialect == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"serving:{key}"})
    totals = []
    for name, delta in zip(COUNTERS, (requests, errors, data_errors), strict=True):
        last = s.execute(
            select(MetricPoint.ts, MetricPoint.value)
            .where(MetricPoint.name == name, MetricPoint.labels_key == key)
            .order_by(MetricPoint.ts.desc(), MetricPoint.id.desc())
            .limit(1)
        ).first()
        if last is None:
            s.add(MetricPoint.of(name, labels, start, 0.0))
            last_ts, base = start, 0.0
        else:
            last_ts, base = float(last[0]), float(last[1])
        total = base + delta
        # a window that ended before the newest point (another worker's) still lands after it
        s.add(MetricPoint.of(name, labels, max(end, last_ts), total))
        totals.append(total)
    return totals[0], totals[1], totals[2]


def counter_totals(s: Session, model: str, version: int) -> tuple[float, float, float]:
    """The version's (requests_total, errors_total, data_errors_total) now; zeros if it never
    served."""
    key = labels_key(counter_labels(model, version))
    out = []
    for name in COUNTERS:
        value = s.scalar(
            select(MetricPoint.value)
            .where(MetricPoint.name == name, MetricPoint.labels_key == key)
            .order_by(MetricPoint.ts.desc(), MetricPoint.id.desc())
            .limit(1)
        )
        out.append(float(value) if value is not None else 0.0)
    return out[0], out[1], out[2]
