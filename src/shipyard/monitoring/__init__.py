"""Monitors for each pipeline kind; they write findings and metric points to the store.

- data, training and validation pipelines: :func:`observe` (a step publishes a data set),
  :func:`on_run_finished` (the runner, after each run), :func:`evaluate_monitors` (the daemon);
  their monitors are set in the pipeline's definition (:mod:`shipyard.monitoring.config`).
- models in service: :class:`ServingMonitor`.

Names are imported on first use, so that the DSL (which reads the monitors' configuration) and
the runner (which calls :func:`on_run_finished`) do not pay for the statistics kernels. No
module is named like a function it exports (``observe`` lives in ``observation.py``): importing
such a module would replace the function with the module on this package.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shipyard.monitoring.config import MonitorSet, MonitorSpec, resolve_monitors
    from shipyard.monitoring.evaluate import evaluate_monitors, on_run_finished
    from shipyard.monitoring.findings import PipelineCheck
    from shipyard.monitoring.observation import Observation, observe
    from shipyard.monitoring.serving import (
        Check,
        ServingMonitor,
        ServingMonitorConfig,
        cbpe,
        expected_calibration_error,
        histogram_quantile,
    )

_WHERE = {
    "Check": "serving",
    "MonitorSet": "config",
    "MonitorSpec": "config",
    "Observation": "observation",
    "PipelineCheck": "findings",
    "ServingMonitor": "serving",
    "ServingMonitorConfig": "serving",
    "cbpe": "serving",
    "evaluate_monitors": "evaluate",
    "expected_calibration_error": "serving",
    "histogram_quantile": "serving",
    "observe": "observation",
    "on_run_finished": "evaluate",
    "resolve_monitors": "config",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'shipyard.monitoring' has no attribute {name!r}")
    value = getattr(import_module(f"shipyard.monitoring.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "Check",
    "MonitorSet",
    "MonitorSpec",
    "Observation",
    "PipelineCheck",
    "ServingMonitor",
    "ServingMonitorConfig",
    "cbpe",
    "evaluate_monitors",
    "expected_calibration_error",
    "histogram_quantile",
    "observe",
    "on_run_finished",
    "resolve_monitors",
]
