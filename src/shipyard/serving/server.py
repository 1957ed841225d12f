"""Building the serving app from a workspace, and running it under Uvicorn.

``shipyard serve --workers N`` runs N Uvicorn worker processes; each builds its own app (its
own loaded models, windows and flush thread) through :func:`create_app`, the factory Uvicorn
imports. Options reach the workers through the ``SHIPYARD_SERVE_OPTIONS`` environment variable
(JSON), the way every worker process sees the same configuration.

With several workers, ``/metrics`` on any of them shows the counters of all of them:
:func:`run` turns on prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, a
temporary folder that the server creates and removes; the user's own folder if they set one),
in which every worker writes its samples to memory-mapped files and the exposition sums them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from shipyard.registry import Registry
from shipyard.serving.app import ServingApp
from shipyard.serving.live import LiveModels
from shipyard.serving.telemetry import MULTIPROC_ENV, Telemetry
from shipyard.workspace import Workspace

OPTIONS_ENV = "SHIPYARD_SERVE_OPTIONS"


def build_app(
    ws: Workspace,
    *,
    default_model: str | None = None,
    monitoring: bool = True,
    flush_interval_s: float | None = None,
    refresh_interval_s: float | None = None,
    sample_rate: float | None = None,
) -> ServingApp:
    cfg = ws.settings.serving
    registry = Registry.of(ws)
    live = LiveModels(registry, refresh_interval_s or cfg.refresh_interval_s)
    telemetry = Telemetry(
        ws.store,
        ws.artifacts,
        enabled=monitoring,
        flush_interval_s=flush_interval_s or cfg.flush_interval_s,
        sample_rate=cfg.request_log_sample_rate if sample_rate is None else sample_rate,
        clock=ws.clock,
    )
    return ServingApp(live, telemetry, default_model=default_model, clock=ws.clock)


def create_app() -> ServingApp:
    """The factory Uvicorn calls in each worker."""
    options: dict[str, Any] = json.loads(os.environ.get(OPTIONS_ENV, "{}"))
    return build_app(Workspace.open(), **options)


def run(
    host: str,
    port: int,
    workers: int = 1,
    *,
    default_model: str | None = None,
    monitoring: bool = True,
    log_level: str = "warning",
) -> None:
    """Serve until interrupted."""
    os.environ[OPTIONS_ENV] = json.dumps({"default_model": default_model, "monitoring": monitoring})
    Workspace.open()  # fail here, in one clear line, if the workspace cannot be opened
    own_dir = None
    if workers > 1 and not os.environ.get(MULTIPROC_ENV):
        # read by prometheus-client when a (spawned) worker imports it
        own_dir = os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="shipyard-metrics-")
    try:
        _serve(host, port, workers, log_level)
    finally:
        if own_dir is not None:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(own_dir, ignore_errors=True)


def _serve(host: str, port: int, workers: int, log_level: str) -> None:
    import uvicorn

    uvicorn.run(
        "shipyard.serving.server:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http="httptools" if _has_httptools() else "h11",
        loop="uvloop" if _has_uvloop() else "asyncio",
        log_level=log_level,
        access_log=False,
        lifespan="on",
    )


def _has_httptools() -> bool:
    try:
        import httptools  # noqa: F401
    except ImportError:
        return False
    return True


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True
