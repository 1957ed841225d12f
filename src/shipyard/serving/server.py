"""Building the serving app from a workspace, and running it under Uvicorn.

``shipyard serve --workers N`` runs N Uvicorn worker processes; each builds its own app (its
own loaded models, windows and flush thread) through :func:`create_app`, the factory Uvicorn
imports. Options reach the workers through the ``SHIPYARD_SERVE_OPTIONS`` environment variable
(JSON), the way every worker process sees the same configuration.

With several workers, ``/metrics`` on any of them shows the counters of all of them:
:func:`run` turns on prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, a
temporary folder that the server creates and removes; the user's own folder if they set one),
in which every worker writes its samples to memory-mapped files and the exposition sums them.

``shipyard serve --pool POOL`` runs the server on quota: before it listens, the main process
takes a lease in the pool (:class:`~shipyard.serving.instances.InstanceKeeper`), refusing to
start when the pool cannot grant it; a background thread heartbeats the lease with the measured
usage of the server's processes; a clean stop (SIGTERM, Ctrl-C) releases it. With or without a
pool, the server records where it answers and what it serves (``serving_instances``), so that
the control loop can probe it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable
from types import FrameType
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


class _Stopped(Exception):
    """SIGTERM or SIGINT arrived after the server shut down: the clean way out of :func:`run`."""


def run(
    host: str,
    port: int,
    workers: int = 1,
    *,
    default_model: str | None = None,
    monitoring: bool = True,
    log_level: str = "warning",
    pool: str | None = None,
    cpu: float | None = None,
    memory: str | None = None,
    wait_s: float | None = 60.0,
    announce: Callable[[str], object] | None = None,
) -> None:
    """Serve until interrupted; with ``pool``, on a lease in that pool (see the module doc).

    Raises :class:`~shipyard.errors.QuotaError` or ``NotFound`` before listening when the pool
    cannot grant the lease (infeasible, missing, or still full after ``wait_s``)."""
    from shipyard.quota import LeaseManager
    from shipyard.serving.instances import InstanceKeeper, serving_request

    os.environ[OPTIONS_ENV] = json.dumps({"default_model": default_model, "monitoring": monitoring})
    ws = Workspace.open()  # fail here, in one clear line, if the workspace cannot be opened
    ttl_s = ws.settings.quota.lease_ttl_s
    leases, request = None, None
    if pool is not None:
        request = serving_request(host, port, pool, workers, cpu, memory)
        leases = LeaseManager(ws.store, clock=ws.clock, lease_ttl_s=ttl_s)
    keeper = InstanceKeeper(
        ws.store,
        url=f"http://{advertised_host(host)}:{port}",
        host=host,
        workers=workers,
        ttl_s=ttl_s,
        leases=leases,
        request=request,
        wait_s=wait_s,
        clock=ws.clock,
    )
    own_dir = None
    if workers > 1 and not os.environ.get(MULTIPROC_ENV):
        # read by prometheus-client when a (spawned) worker imports it
        own_dir = os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="shipyard-metrics-")
    # Uvicorn restores the handlers it found and re-raises the signal it caught once it has
    # shut down: with the default SIGTERM handler the process would die before the lease is
    # released, so the handler it finds ends run() cleanly instead.
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        keeper.start()
        if announce is not None:
            on = f" on lease {keeper.lease.lease_id} in pool {pool}" if keeper.lease else ""
            announce(f"serving on http://{host}:{port} with {workers} worker(s){on}")
        _serve(host, port, workers, log_level)
    except (_Stopped, KeyboardInterrupt):
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        keeper.stop()
        if own_dir is not None:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(own_dir, ignore_errors=True)


def _raise_stopped(signum: int, _frame: FrameType | None) -> None:
    raise _Stopped(signum)


def advertised_host(host: str) -> str:
    """The address others reach a server on: its host name when it listens on every address."""
    if host in ("0.0.0.0", "::", ""):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host


def free_port(host: str) -> int:
    """A port nobody listens on now (for ``--port 0``: the URL must be known before serving)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        found: int = s.getsockname()[1]
        return found


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
