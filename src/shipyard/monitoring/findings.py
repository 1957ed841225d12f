"""How a monitor's verdict (:class:`shipyard.checks.Check`) is written to the store as
``Finding`` and ``MetricPoint`` rows, and how the last verdicts are read back.

A pipeline check's subject is its pipeline (run monitors) or ``pipeline/dataset`` (data set
monitors): pipeline names cannot hold ``/``, so the subject tells both apart and the last
verdicts of one pipeline are one indexed prefix query.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shipyard.checks import Check
from shipyard.monitoring.config import DATASET_MONITORS, RUN_MONITORS
from shipyard.statuses import CheckStatus
from shipyard.store.tables import Finding, MetricPoint

PIPELINE_MONITORS = (*DATASET_MONITORS, *RUN_MONITORS)
LastFindings = dict[str, list[dict[str, Any]]]
"""Per monitor, the latest finding of each subject (newest first)."""


def add_checks(session: Session, checks: Sequence[Check], ts: float) -> None:
    """Add each check as a Finding and its metric points to ``session`` (the caller's
    transaction): every monitor, of pipelines and of served models, writes through here."""
    for c in checks:
        session.add(
            Finding(
                monitor=c.monitor,
                subject=c.subject,
                run_id=c.run_id,
                status=c.status,
                summary=c.summary,
                evidence=jsonable(c.evidence),
                labels=dict(c.labels),
                ts=ts,
            )
        )
        for name, metric_labels, value in c.metrics:
            session.add(MetricPoint.of(name, metric_labels, ts, value))


def last_findings_in(
    session: Session, pipelines: Sequence[str]
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per pipeline of ``pipelines``, per monitor, the latest finding of each of its subjects
    (newest first), read in one query however many pipelines there are.

    The subjects of pipelines ``a`` … ``z`` lie in ``["a", "z0")``: ``"z/…"`` sorts below
    ``"z0"`` because ``"0"`` follows ``"/"``. That one indexed range is read, the newest finding
    of each (monitor, subject) picked by the database (``row_number()``), and subjects of
    pipelines in the range but not asked for are dropped here."""
    out: dict[str, LastFindings] = {p: {} for p in pipelines}
    if not pipelines:
        return out
    newest = (
        select(
            Finding.id,
            func.row_number()
            .over(
                partition_by=(Finding.monitor, Finding.subject),
                order_by=(Finding.ts.desc(), Finding.id.desc()),
            )
            .label("nth"),
        )
        .where(
            Finding.monitor.in_(PIPELINE_MONITORS),
            Finding.subject >= min(pipelines),
            Finding.subject < max(pipelines) + "0",
        )
        .subquery()
    )
    rows = session.scalars(
        select(Finding)
        .join(newest, Finding.id == newest.c.id)
        .where(newest.c.nth == 1)
        .order_by(Finding.ts.desc(), Finding.id.desc())
    )
    for f in rows:
        of = out.get(f.subject.split("/", 1)[0])
        if of is None:
            continue
        of.setdefault(f.monitor, []).append(
            {
                "subject": f.subject,
                "dataset": f.labels.get("dataset"),
                "run_id": f.run_id,
                "status": f.status,
                "summary": f.summary,
                "ts": f.ts,
            }
        )
    return out


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and non-finite floats as ``None``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _worst(statuses: Iterable[str]) -> str:
    return max(statuses, key=_severity)


def _severity(status: str) -> int:
    try:
        return CheckStatus(status).severity
    except ValueError:  # a status of a later version: the mildest
        return 0
