"""Which monitors a pipeline gets, and how each is set: :mod:`shipyard.monitor_config` (in the
base, so that the pipeline DSL reads it without importing monitoring), re-exported for
monitoring's modules."""

from __future__ import annotations

from shipyard.monitor_config import (
    DATASET_MONITORS,
    DEFAULTS,
    DRIFT_OPTIONS,
    KIND_MONITORS,
    OPTIONS,
    RUN_MONITORS,
    MonitorSet,
    MonitorSpec,
    resolve_monitors,
)

__all__ = [
    "DATASET_MONITORS",
    "DEFAULTS",
    "DRIFT_OPTIONS",
    "KIND_MONITORS",
    "OPTIONS",
    "RUN_MONITORS",
    "MonitorSet",
    "MonitorSpec",
    "resolve_monitors",
]
