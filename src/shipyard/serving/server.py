"""Building the serving app from a workspace, and running it under Uvicorn.

``shipyard serve --workers N`` runs N Uvicorn worker processes; each builds its own app (its
own loaded models, windows and flush thread) through :func:`create_app`, the factory Uvicorn
imports. Options reach the workers through the ``SHIPYARD_SERVE_OPTIONS`` environment variable
(JSON), the way every worker process sees the same configuration.
"""

from __future__ import annotations

import json
import os
from typing import Any

from shipyard.registry import Registry
from shipyard.serving.app import ServingApp
from shipyard.serving.live import LiveModels
from shipyard.serving.telemetry import Telemetry
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
    import uvicorn

    os.environ[OPTIONS_ENV] = json.dumps({"default_model": default_model, "monitoring": monitoring})
    Workspace.open()  # fail here, in one clear line, if the workspace cannot be opened
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
