"""The model server: OIP V2 and MLflow scoring protocols, live versions and the traffic split
(serving's, commanded by deploy), serving telemetry, the cumulative serving counters, and reads
of what servers flushed.

The ASGI app and its server (``shipyard.serving.app``, ``shipyard.serving.server``) are a face
above this package and are imported from those modules, so that importing ``shipyard.serving``
(as deploy and monitoring do) loads no HTTP server. The names below load their module on first
use (:mod:`shipyard.lazy`): deploy commanding the split loads the split, not the registry or
prometheus-client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shipyard.lazy import lazy_exports

if TYPE_CHECKING:
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
    from shipyard.serving.records import (
        FlushedWindow,
        labelled_predictions,
        predictions,
        windows,
    )
    from shipyard.serving.split import (
        LiveSplit,
        clear_split,
        live_split,
        live_splits,
        set_split,
        split_in,
    )
    from shipyard.serving.telemetry import Telemetry

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "counters": ("DATA_ERRORS_TOTAL", "ERRORS_TOTAL", "REQUESTS_TOTAL", "counter_totals"),
        "live": (
            "LiveModels",
            "LiveState",
            "LiveVersion",
            "ServedBySplit",
            "live_state",
            "live_states",
            "live_versions",
            "move_alias",
            "pick",
            "routing_key",
        ),
        "records": ("FlushedWindow", "labelled_predictions", "predictions", "windows"),
        "split": ("LiveSplit", "clear_split", "live_split", "live_splits", "set_split", "split_in"),
        "telemetry": ("Telemetry",),
    },
)

__all__ = [
    "DATA_ERRORS_TOTAL",
    "ERRORS_TOTAL",
    "REQUESTS_TOTAL",
    "FlushedWindow",
    "LiveModels",
    "LiveSplit",
    "LiveState",
    "LiveVersion",
    "ServedBySplit",
    "Telemetry",
    "clear_split",
    "counter_totals",
    "labelled_predictions",
    "live_split",
    "live_splits",
    "live_state",
    "live_states",
    "live_versions",
    "move_alias",
    "pick",
    "predictions",
    "routing_key",
    "set_split",
    "split_in",
    "windows",
]
