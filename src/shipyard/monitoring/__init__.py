"""Monitors for each pipeline kind; they write findings and metric points to the store.

- data, training and validation pipelines: :func:`observe` (a step publishes a data set),
  :func:`on_run_finished` (after each run: a listener ``shipyard run`` hands the runner),
  :func:`evaluate_monitors` (the daemon); their monitors are set in the pipeline's definition
  (:mod:`shipyard.monitor_config`, in the base).
- models in service: :class:`ServingMonitor`.

Names are imported on first use, so that a command that names one function (``shipyard run``
wires :func:`on_run_finished`) does not pay for the statistics kernels. No
module is named like a function it exports (``observe`` lives in ``observation.py``): importing
such a module would replace the function with the module on this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shipyard.lazy import lazy_exports

if TYPE_CHECKING:
    from shipyard.monitoring.config import MonitorSet, MonitorSpec, resolve_monitors
    from shipyard.monitoring.evaluate import evaluate_monitors, on_run_finished
    from shipyard.monitoring.findings import Check
    from shipyard.monitoring.observation import Observation, observe
    from shipyard.monitoring.serving import ServingMonitor, ServingMonitorConfig

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "config": ("MonitorSet", "MonitorSpec", "resolve_monitors"),
        "evaluate": ("evaluate_monitors", "on_run_finished"),
        "findings": ("Check",),
        "observation": ("Observation", "observe"),
        "serving": ("ServingMonitor", "ServingMonitorConfig"),
    },
)

__all__ = [
    "Check",
    "MonitorSet",
    "MonitorSpec",
    "Observation",
    "ServingMonitor",
    "ServingMonitorConfig",
    "evaluate_monitors",
    "observe",
    "on_run_finished",
    "resolve_monitors",
]
