"""Where a pipeline's monitor settings come from, and where they are kept.

The pipeline's definition (``Pipeline(monitors=…)``) is the source. The runner and the step
processes have the pipeline's module loaded already, so they read it from there (nothing is
imported for it); the runner then keeps the settings in ``monitor_settings``, which is what the
daemon and the CLI read, because they never import users' pipeline files. A pipeline with no
stored settings gets its kind's defaults.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy.orm import Session

from shipyard.monitoring.config import MonitorSet, resolve_monitors
from shipyard.store.monitoring import MonitorSettings


def loaded_definition(pipeline: str, file: str | None) -> MonitorSet | None:
    """The settings of ``pipeline`` from its module, if this process has already loaded it."""
    if not file:
        return None
    from shipyard.pipelines.dsl import Pipeline
    from shipyard.pipelines.loader import module_name

    module = sys.modules.get(module_name(Path(file).expanduser().resolve()))
    if module is None:
        return None
    for value in vars(module).values():
        if isinstance(value, Pipeline) and value.name == pipeline:
            monitors: MonitorSet = value.monitors
            return monitors
    return None


def stored_settings(session: Session, pipeline: str, kind: str) -> MonitorSet:
    """The settings kept for ``pipeline``, else the defaults of its ``kind``."""
    row = session.get(MonitorSettings, pipeline)
    if row is not None and row.monitors:
        return MonitorSet.from_json(row.monitors)
    return resolve_monitors(kind)


def monitors_of(session: Session, pipeline: str, kind: str, file: str | None) -> MonitorSet:
    """The definition's settings when loaded here, else the stored ones, else the defaults."""
    return loaded_definition(pipeline, file) or stored_settings(session, pipeline, kind)


def keep_settings(session: Session, pipeline: str, monitors: MonitorSet, ts: float) -> None:
    """Store ``monitors`` as ``pipeline``'s settings (in the caller's transaction)."""
    row = session.get(MonitorSettings, pipeline)
    if row is None:
        row = MonitorSettings(pipeline=pipeline)
        session.add(row)
    row.kind = monitors.kind
    row.monitors = monitors.to_json()
    row.updated_at = ts
