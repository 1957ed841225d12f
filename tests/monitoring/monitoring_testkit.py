"""Helpers the monitoring tests share (a module of its own, so no other folder's conftest can
shadow it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from shipyard.monitoring.config import resolve_monitors
from shipyard.monitoring.observation import Observation, publish
from shipyard.workspace import Workspace

Publish = Callable[..., Observation]


def central_ink(frame: pd.DataFrame) -> np.ndarray:
    cols = [f"pixel_{r}_{c}" for r in range(2, 6) for c in range(2, 6)]
    return np.asarray(frame[cols].to_numpy(dtype=float).mean(axis=1))


def publisher(ws: Workspace, kind: str = "data", monitors: dict[str, Any] | None = None) -> Publish:
    settings = resolve_monitors(kind, monitors)

    def call(pipeline: str, dataset: str, frame: Any, **kw: Any) -> Observation:
        return publish(ws.store, ws.artifacts, ws.clock, settings, pipeline, dataset, frame, **kw)

    return call
