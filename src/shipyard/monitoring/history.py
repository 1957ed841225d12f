"""What the monitors said, read back a page at a time: the pipelines' monitors with their last
verdicts, the findings with filters, one finding's evidence, and one metric series over a time
range in a bounded number of points (what a dashboard draws).

Pages are keyed on what the last item of the page before was (a pipeline's name; a finding's
``(ts, id)``), so a page costs the same wherever it starts and findings written between two
pages do not shift the next one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, and_, cast, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from shipyard.errors import InvalidInput, NotFound
from shipyard.monitoring.config import DATASET_MONITORS
from shipyard.monitoring.findings import PIPELINE_MONITORS, _worst, last_findings_in
from shipyard.monitoring.settings import stored_settings_of
from shipyard.store import Store
from shipyard.store.tables import Finding, MetricPoint, PipelineRecord, labels_key


def monitors_page(store: Store, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """Up to ``limit`` pipelines named after ``after`` with their monitors (on or off, options)
    and the last verdicts of each, and whether more pipelines follow."""
    q = select(PipelineRecord.name, PipelineRecord.kind).order_by(PipelineRecord.name)
    if after is not None:
        q = q.where(PipelineRecord.name > after)
    with store.session(readonly=True) as s:
        pipelines = s.execute(q.limit(limit + 1)).all()
        out = _with_monitors(s, [(name, kind) for name, kind in pipelines[:limit]])
    return out, len(pipelines) > limit


def pipeline_monitors(store: Store, name: str) -> dict[str, Any]:
    """One pipeline's monitors and their last verdicts, as :func:`monitors_page` gives each;
    :class:`NotFound` naming the closest pipelines unless ``name`` is one."""
    with store.session(readonly=True) as s:
        row = s.get(PipelineRecord, name)
        if row is None:
            known = s.scalars(select(PipelineRecord.name))
            raise NotFound("pipeline", name, "see `shipyard pipelines list`", candidates=known)
        return _with_monitors(s, [(row.name, row.kind)])[0]


def _with_monitors(s: Session, pipelines: list[tuple[str, str]]) -> list[dict[str, Any]]:
    last = last_findings_in(s, [name for name, _ in pipelines])
    out = []
    for (name, kind), settings in zip(pipelines, stored_settings_of(s, pipelines), strict=True):
        monitors = []
        for monitor, spec in settings.monitors.items():
            results = last[name].get(monitor, [])
            monitors.append(
                {
                    "monitor": monitor,
                    "enabled": spec.enabled,
                    "options": spec.options,
                    "status": _worst(r["status"] for r in results) if results else None,
                    "last": results,
                }
            )
        out.append({"pipeline": name, "kind": kind, "monitors": monitors})
    return out


def require_pipeline(store: Store, name: str) -> None:
    """:class:`NotFound` naming the closest pipelines unless ``name`` is one."""
    with store.session(readonly=True) as s:
        if s.get(PipelineRecord, name) is None:
            known = s.scalars(select(PipelineRecord.name))
            raise NotFound("pipeline", name, "see `shipyard pipelines list`", candidates=known)


@dataclass(frozen=True)
class FindingFilter:
    """Which findings: of a pipeline (its runs and data sets), of one data set (of a pipeline,
    or of any), of a served model (or one version of it), of one monitor, status or run, and
    since when. Pipeline names hold no ``/``, so a subject tells these apart."""

    pipeline: str | None = None
    dataset: str | None = None
    model: str | None = None
    version: int | None = None
    monitor: str | None = None
    status: str | None = None
    run_id: str | None = None
    since: float | None = None

    def where(self) -> list[ColumnElement[bool]]:
        subject = Finding.subject
        out: list[ColumnElement[bool]] = []
        if self.pipeline is not None:
            out.append(Finding.monitor.in_(PIPELINE_MONITORS))
            if self.dataset is not None:
                out.append(subject == f"{self.pipeline}/{self.dataset}")
            else:
                out.append(
                    or_(
                        subject == self.pipeline,
                        subject.startswith(f"{self.pipeline}/", autoescape=True),
                    )
                )
        elif self.dataset is not None:
            out.append(Finding.monitor.in_(DATASET_MONITORS))
            out.append(subject.endswith(f"/{self.dataset}", autoescape=True))
        if self.model is not None:
            out.append(Finding.monitor.not_in(PIPELINE_MONITORS))
            if self.version is not None:
                out.append(subject == f"{self.model}/{self.version}")
            else:
                out.append(
                    or_(
                        subject == self.model, subject.startswith(f"{self.model}/", autoescape=True)
                    )
                )
        elif self.version is not None:
            raise InvalidInput("query.version: give the model too")
        if self.monitor is not None:
            out.append(Finding.monitor == self.monitor)
        if self.status is not None:
            out.append(Finding.status == self.status)
        if self.run_id is not None:
            out.append(Finding.run_id == self.run_id)
        if self.since is not None:
            out.append(Finding.ts >= self.since)
        return out


def finding_to_json(f: Finding, evidence: bool = False) -> dict[str, Any]:
    out = {
        "id": f.id,
        "monitor": f.monitor,
        "subject": f.subject,
        "labels": dict(f.labels or {}),
        "run_id": f.run_id,
        "status": f.status,
        "summary": f.summary,
        "ts": f.ts,
    }
    if evidence:
        out["evidence"] = f.evidence
    return out


def findings_page(
    s: Session, which: FindingFilter, after: tuple[float, int] | None, limit: int
) -> tuple[list[dict[str, Any]], tuple[float, int] | None]:
    """Up to ``limit`` findings that ``which`` selects, newest first, after the key ``after``
    (the ``(ts, id)`` of the last one of the page before), and the key of the last one when a
    page follows."""
    q = select(Finding).where(*which.where())
    if after is not None:
        ts, finding_id = after
        q = q.where(or_(Finding.ts < ts, and_(Finding.ts == ts, Finding.id < finding_id)))
    rows = s.scalars(q.order_by(Finding.ts.desc(), Finding.id.desc()).limit(limit + 1)).all()
    chunk = rows[:limit]
    next_key = (chunk[-1].ts, chunk[-1].id) if len(rows) > limit else None
    return [finding_to_json(f) for f in chunk], next_key


def finding(s: Session, finding_id: int) -> dict[str, Any]:
    """One finding with its evidence."""
    row = s.get(Finding, finding_id)
    if row is None:
        raise NotFound("finding", finding_id, "see `shipyard monitors findings`")
    return finding_to_json(row, evidence=True)


def metric_series(
    s: Session,
    name: str,
    labels: dict[str, str],
    since: float,
    until: float,
    max_points: int,
) -> dict[str, Any]:
    """The points of the series ``name{labels}`` (exactly those labels) in ``[since, until]``.

    At most ``max_points``: when the range holds more, it is cut into ``max_points`` equal
    buckets and each non-empty one becomes a point at its start with the mean, min, max and
    count of its values, computed by the database."""
    if not since < until:
        raise InvalidInput("query.since: must be before query.until")
    in_range = (
        MetricPoint.name == name,
        MetricPoint.labels_key == labels_key(labels),
        MetricPoint.ts >= since,
        MetricPoint.ts <= until,
    )
    total = s.scalar(select(func.count()).select_from(MetricPoint).where(*in_range)) or 0
    out: dict[str, Any] = {
        "name": name,
        "labels": labels,
        "since": since,
        "until": until,
        "total_points": total,
        "step_s": None,
    }
    if total <= max_points:
        rows = s.execute(
            select(MetricPoint.ts, MetricPoint.value)
            .where(*in_range)
            .order_by(MetricPoint.ts, MetricPoint.id)
        ).all()
        out["points"] = [{"ts": ts, "value": _finite(v)} for ts, v in rows]
        return out
    step_s = (until - since) / max_points
    offset = (MetricPoint.ts - since) / step_s
    # ts >= since, so the offset is never negative and truncation is floor; PostgreSQL's cast
    # rounds, so it is given floor() explicitly.
    postgres = s.get_bind().dialect.name == "postgresql"
    bucket = cast(func.floor(offset), Integer) if postgres else cast(offset, Integer)
    points = select(bucket.label("b"), MetricPoint.value).where(*in_range).subquery()
    grouped = s.execute(
        select(
            points.c.b,
            func.count(),
            func.sum(points.c.value),
            func.min(points.c.value),
            func.max(points.c.value),
        ).group_by(points.c.b)
    ).all()
    merged: dict[int, list[float]] = {}
    for b, count, total_value, low, high in grouped:
        b = min(int(b), max_points - 1)  # ts == until falls just past the last bucket
        acc = merged.get(b)
        if acc is None:
            merged[b] = [count, total_value, low, high]
        else:
            acc[0] += count
            acc[1] += total_value
            acc[2] = min(acc[2], low)
            acc[3] = max(acc[3], high)
    out["step_s"] = step_s
    out["points"] = [
        {
            "ts": since + b * step_s,
            "value": _finite(acc[1] / acc[0]),
            "min": _finite(acc[2]),
            "max": _finite(acc[3]),
            "count": int(acc[0]),
        }
        for b, acc in sorted(merged.items())
    ]
    return out


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
