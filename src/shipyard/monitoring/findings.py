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
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from shipyard.checks import Check
from shipyard.errors import NotFound
from shipyard.monitoring.config import DATASET_MONITORS, RUN_MONITORS
from shipyard.statuses import CheckStatus
from shipyard.store import Store
from shipyard.store.tables import Finding, MetricPoint


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


def last_findings(store: Store, pipeline: str) -> dict[str, list[dict[str, Any]]]:
    """Per monitor, the latest finding of each of its subjects for ``pipeline`` (newest first)."""
    monitors = (*DATASET_MONITORS, *RUN_MONITORS)
    with store.session() as s:
        rows = s.scalars(
            select(Finding)
            .where(
                Finding.monitor.in_(monitors),
                or_(Finding.subject == pipeline, Finding.subject.startswith(f"{pipeline}/")),
            )
            .order_by(Finding.ts.desc(), Finding.id.desc())
            .limit(500)
        ).all()
        out: dict[str, list[dict[str, Any]]] = {}
        seen: set[tuple[str, str]] = set()
        for f in rows:
            if (f.monitor, f.subject) in seen:
                continue
            seen.add((f.monitor, f.subject))
            out.setdefault(f.monitor, []).append(
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


def overview(store: Store, pipeline: str | None = None) -> list[dict[str, Any]]:
    """Each pipeline's monitors (on or off, options) and their last verdicts: what
    ``shipyard monitors list`` shows."""
    from shipyard.monitoring.settings import stored_settings
    from shipyard.pipelines.records import list_pipelines

    known = list_pipelines(store)
    if pipeline is not None:
        known = [p for p in known if p["name"] == pipeline]
        if not known:
            raise NotFound("pipeline", pipeline, "see `shipyard pipelines list`")
    out = []
    for p in known:
        with store.session() as s:
            settings = stored_settings(s, p["name"], p["kind"])
        last = last_findings(store, p["name"])
        monitors = []
        for name, spec in settings.monitors.items():
            results = last.get(name, [])
            monitors.append(
                {
                    "monitor": name,
                    "enabled": spec.enabled,
                    "options": spec.options,
                    "status": _worst(r["status"] for r in results) if results else None,
                    "last": results,
                }
            )
        out.append({"pipeline": p["name"], "kind": p["kind"], "monitors": monitors})
    return out


def _worst(statuses: Iterable[str]) -> str:
    return max(statuses, key=_severity)


def _severity(status: str) -> int:
    try:
        return CheckStatus(status).severity
    except ValueError:  # a status of a later version: the mildest
        return 0
