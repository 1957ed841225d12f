"""Monitors for each pipeline kind; they write findings and metric points to the store."""

from shipyard.monitoring.serving import (
    Check,
    ServingMonitor,
    ServingMonitorConfig,
    cbpe,
    expected_calibration_error,
    histogram_quantile,
)

__all__ = [
    "Check",
    "ServingMonitor",
    "ServingMonitorConfig",
    "cbpe",
    "expected_calibration_error",
    "histogram_quantile",
]
