"""The model server: OIP V2 and MLflow scoring protocols, live versions, serving telemetry."""

from shipyard.serving.app import ServingApp
from shipyard.serving.live import LiveModels, LiveVersion, live_versions, pick
from shipyard.serving.server import build_app, create_app, run
from shipyard.serving.telemetry import Telemetry

__all__ = [
    "LiveModels",
    "LiveVersion",
    "ServingApp",
    "Telemetry",
    "build_app",
    "create_app",
    "live_versions",
    "pick",
    "run",
]
