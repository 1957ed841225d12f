"""Where a pipeline's monitor settings come from, and where they are kept.

The pipeline's definition (``Pipeline(monitors=…)``) is the source. Each run keeps the resolved
settings it was created with (``runs.monitors``, written by the runner with the run), so a step
and the run-finished listener read them from the run; after each run its settings are also kept
per pipeline in ``monitor_settings``, which is what the daemon and the CLI read for a pipeline
as a whole (they never import users' pipeline files). A pipeline with no stored settings gets
its kind's defaults.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from shipyard.monitoring.config import MonitorSet, resolve_monitors
from shipyard.store.monitoring import MonitorSettings
from shipyard.store.tables import Run


def run_settings(run: Run) -> MonitorSet | None:
    """The settings ``run`` was created with; ``None`` for a run recorded before runs kept
    them."""
    return MonitorSet.from_json(run.monitors) if run.monitors else None


def stored_settings(session: Session, pipeline: str, kind: str) -> MonitorSet:
    """The settings kept for ``pipeline``, else the defaults of its ``kind``."""
    return stored_settings_of(session, [(pipeline, kind)])[0]


def stored_settings_of(session: Session, pipelines: Sequence[tuple[str, str]]) -> list[MonitorSet]:
    """:func:`stored_settings` of each ``(pipeline, kind)``, read in one query."""
    names = [name for name, _ in pipelines]
    rows = {
        r.pipeline: r
        for r in session.scalars(select(MonitorSettings).where(MonitorSettings.pipeline.in_(names)))
    }
    out = []
    for name, kind in pipelines:
        row = rows.get(name)
        out.append(
            MonitorSet.from_json(row.monitors)
            if row is not None and row.monitors
            else resolve_monitors(kind)
        )
    return out


def monitors_of(session: Session, run: Run) -> MonitorSet:
    """The run's own settings, else its pipeline's stored ones, else its kind's defaults."""
    return run_settings(run) or stored_settings(session, run.pipeline, run.kind)


def keep_settings(session: Session, pipeline: str, monitors: MonitorSet, ts: float) -> None:
    """Store ``monitors`` as ``pipeline``'s settings (in the caller's transaction)."""
    row = session.get(MonitorSettings, pipeline)
    if row is None:
        row = MonitorSettings(pipeline=pipeline)
        session.add(row)
    row.kind = monitors.kind
    row.monitors = monitors.to_json()
    row.updated_at = ts
