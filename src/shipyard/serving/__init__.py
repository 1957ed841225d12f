"""The model server: OIP V2 and MLflow scoring protocols, live versions and deploy's traffic
split, serving telemetry, the cumulative serving counters, and reads of what servers flushed."""

from shipyard.serving.app import ServingApp
from shipyard.serving.counters import (
    DATA_ERRORS_TOTAL,
    ERRORS_TOTAL,
    REQUESTS_TOTAL,
    counter_totals,
)
from shipyard.serving.live import (
    LiveModels,
    LiveState,
    LiveVersion,
    ServedBySplit,
    live_state,
    live_states,
    live_versions,
    move_alias,
    pick,
    routing_key,
)
from shipyard.serving.records import FlushedWindow, labelled_predictions, predictions, windows
from shipyard.serving.server import build_app, create_app, run
from shipyard.serving.telemetry import Telemetry

__all__ = [
    "DATA_ERRORS_TOTAL",
    "ERRORS_TOTAL",
    "REQUESTS_TOTAL",
    "FlushedWindow",
    "LiveModels",
    "LiveState",
    "LiveVersion",
    "ServedBySplit",
    "ServingApp",
    "Telemetry",
    "build_app",
    "counter_totals",
    "create_app",
    "labelled_predictions",
    "live_state",
    "live_states",
    "live_versions",
    "move_alias",
    "pick",
    "predictions",
    "routing_key",
    "run",
    "windows",
]
