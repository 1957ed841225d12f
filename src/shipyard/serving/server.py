"""Building the serving app from a workspace, and running it under Uvicorn.

``shipyard serve --workers N`` runs N Uvicorn worker processes; each builds its own app (its
own loaded models, windows and flush thread) through an :class:`AppFactory`, the factory Uvicorn
calls. The server hands each worker everything explicitly in a :class:`WorkerSetup`: the
settings the server resolved (the workspace it opened, its serving settings), the options of
the command line, and the supervisor's pid and instance id. Uvicorn pickles the factory into
each spawned worker, so nothing is read back from ``os.environ`` and a worker serves exactly
the workspace its server opened. Each process opens the workspace once: a one-worker server
serves from the main process with the workspace :func:`run` opened; a spawned worker opens its
own from the setup.

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

Before any of that, :func:`run` makes sure it can listen (:func:`check_port` binds the address
the way Uvicorn will): a port in use fails in one line, with no lease asked and no record
written. Then it closes the records of servers that died without closing their own
(:func:`~shipyard.serving.instances.reap_stale_instances`) and says which. Each worker of a
multi-worker server ends with its supervisor (:mod:`shipyard.supervision`): it learns
the supervisor's pid and its instance id from its :class:`WorkerSetup`.

The one variable the server sets is prometheus-client's own, ``PROMETHEUS_MULTIPROC_DIR``: the
library reads it when a worker imports it, before any code of the server runs there. It is
removed (with the folder) when the server stops.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from shipyard.config import Settings
from shipyard.errors import InvalidInput
from shipyard.identity.authn import Authenticator
from shipyard.observability.logs import configure
from shipyard.observability.otlp import otlp_handler
from shipyard.quota import LeaseManager
from shipyard.registry import Registry
from shipyard.serving.app import ServingApp
from shipyard.serving.doors import Doors, doors_settings
from shipyard.serving.instances import (
    InstanceKeeper,
    InstanceRecord,
    close_instance,
    reap_stale_instances,
    serving_request,
)
from shipyard.serving.limits import RequestLimits
from shipyard.serving.live import LiveModels
from shipyard.serving.telemetry import MULTIPROC_ENV, Telemetry
from shipyard.supervision import ParentWatch, bind_tcp
from shipyard.workspace import Workspace


def build_app(
    ws: Workspace,
    *,
    default_model: str | None = None,
    monitoring: bool = True,
    flush_interval_s: float | None = None,
    refresh_interval_s: float | None = None,
    sample_rate: float | None = None,
    auth: tuple[str, ...] = (),
) -> ServingApp:
    """The app serving ``ws``'s live models; ``auth`` names the models whose inference needs a
    token (``*``: all of them; :mod:`shipyard.serving.doors`)."""
    cfg = ws.settings.serving
    registry = Registry.of(ws)
    live = LiveModels(registry, refresh_interval_s or cfg.refresh_interval_s, ws.clock)
    telemetry = Telemetry(
        ws.store,
        ws.artifacts,
        enabled=monitoring,
        flush_interval_s=flush_interval_s or cfg.flush_interval_s,
        sample_rate=cfg.request_log_sample_rate if sample_rate is None else sample_rate,
        clock=ws.clock,
    )
    return ServingApp(
        live,
        telemetry,
        default_model=default_model,
        clock=ws.clock,
        limits=RequestLimits.from_settings(cfg.limits),
        threads=cfg.threads,
        queue=cfg.queue,
        doors=Doors(Authenticator(ws.store, doors_settings(ws.settings.server), ws.clock), auth),
    )


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker builds its app from, handed over by its server (pickled into a spawned
    worker): the settings the server resolved, the command's options, and who supervises it."""

    settings: Settings
    default_model: str | None = None
    monitoring: bool = True
    auth: tuple[str, ...] = ()
    supervisor_pid: int | None = None
    instance_id: str | None = None
    log_format: str | None = None
    """Set in a spawned worker's setup: the worker logs as its server does."""
    log_level: str = "warning"


class AppFactory:
    """The app factory Uvicorn calls in each worker: builds the app from the :class:`WorkerSetup`
    with the workspace of this process, opened once (the server's own when it serves in its main
    process; a spawned worker opens one from the setup's settings)."""

    def __init__(self, setup: WorkerSetup, ws: Workspace | None = None) -> None:
        self.setup = setup
        self._ws = ws

    def __call__(self) -> ServingApp:
        if self.setup.log_format is not None and self.setup.supervisor_pid != os.getpid():
            configure(self.setup.log_format, self.setup.log_level)
            otlp_handler()
        if self._ws is None:
            self._ws = Workspace(self.setup.settings)
            self._ws.store  # noqa: B018 - open it now: a worker that cannot, fails to start
        app = build_app(
            self._ws,
            default_model=self.setup.default_model,
            monitoring=self.setup.monitoring,
            auth=self.setup.auth,
        )
        watch_supervisor(self._ws, self.setup)
        return app

    def for_spawned_workers(self) -> Callable[[], ServingApp]:
        """This factory as Uvicorn hands it to each spawned worker: the setup as bytes, unpickled
        (which builds the app) only when the worker calls its factory.

        Uvicorn unpickles its config, factory included, in a new worker before the worker starts
        answering its supervisor's health pings, and kills a worker silent for 5 s; unpickling
        the setup imports this whole server, which takes longer than that on a busy machine. Only
        ``pickle.loads`` and the bytes cross before the pings, as a plain import string would.
        """
        return functools.partial(pickle.loads, pickle.dumps(_BuiltWhenUnpickled(self.setup)))


class _BuiltWhenUnpickled:
    """Pickles as the call that builds a worker's app from ``setup``."""

    def __init__(self, setup: WorkerSetup) -> None:
        self.setup = setup

    def __reduce__(self) -> tuple[Callable[[WorkerSetup], ServingApp], tuple[WorkerSetup]]:
        return _build_worker_app, (self.setup,)


def _build_worker_app(setup: WorkerSetup) -> ServingApp:
    return AppFactory(setup)()


def watch_supervisor(ws: Workspace, setup: WorkerSetup) -> ParentWatch | None:
    """In a worker process of a multi-worker server: end with the supervisor, closing the
    server's record and releasing its lease if the supervisor could not (see the module doc).
    ``None`` in the supervisor itself (one worker: Uvicorn serves in the main process)."""
    supervisor, instance_id = setup.supervisor_pid, setup.instance_id
    if supervisor is None or supervisor == os.getpid():
        return None

    def close() -> None:
        if instance_id:
            close_instance(
                ws.store,
                instance_id,
                reason=f"its supervisor (pid {supervisor}) died; closed by worker {os.getpid()}",
                clock=ws.clock,
                lease_ttl_s=ws.settings.quota.lease_ttl_s,
            )

    return ParentWatch(supervisor, close).start()


class _Stopped(Exception):
    """SIGTERM or SIGINT arrived after the server shut down: the clean way out of :func:`run`."""


def run(
    host: str,
    port: int,
    workers: int = 1,
    *,
    default_model: str | None = None,
    monitoring: bool = True,
    auth: tuple[str, ...] = (),
    log_level: str = "warning",
    log_format: str | None = None,
    pool: str | None = None,
    cpu: float | None = None,
    memory: str | None = None,
    wait_s: float | None = 60.0,
    announce: Callable[[str], object] | None = None,
    ws: Workspace | None = None,
) -> None:
    """Serve until interrupted; with ``pool``, on a lease in that pool (see the module doc).

    ``ws`` is the workspace to serve (the command's, already open); without it the workspace of
    the current settings is opened here. Its settings are the ones every worker serves with.

    Raises :class:`~shipyard.errors.InvalidInput` when it cannot listen on ``host:port`` (in
    use, privileged, no such address), and :class:`~shipyard.errors.QuotaError` or
    ``NotFound`` when the pool cannot grant the lease (infeasible, missing, or still full after
    ``wait_s``): both before listening, leaving nothing behind."""
    if ws is None:
        ws = Workspace.open()  # fail here, in one clear line, if the workspace cannot be opened
    check_port(host, port)
    url = f"http://{advertised_host(host)}:{port}"
    ttl_s = ws.settings.quota.lease_ttl_s
    stale = reap_stale_instances(
        ws.store, clock=ws.clock, lease_ttl_s=ttl_s, by=f"the server starting at {url}"
    )
    if announce is not None:
        for record in stale:
            announce(describe_stale(record))
    leases, request = None, None
    if pool is not None:
        request = serving_request(host, port, pool, workers, cpu, memory)
        leases = LeaseManager(ws.store, clock=ws.clock, lease_ttl_s=ttl_s)
    keeper = InstanceKeeper(
        ws.store,
        url=url,
        host=host,
        workers=workers,
        ttl_s=ttl_s,
        leases=leases,
        request=request,
        wait_s=wait_s,
        clock=ws.clock,
        on_lost=lambda reason: _stop_serving(reason, announce),
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
        keeper.start(progress=announce)
        assert keeper.instance_id is not None
        setup = WorkerSetup(
            ws.settings,
            default_model=default_model,
            monitoring=monitoring,
            auth=auth,
            supervisor_pid=os.getpid(),
            instance_id=keeper.instance_id,
            log_format=log_format,
            log_level=log_level,
        )
        if announce is not None:
            on = f" on lease {keeper.lease.lease_id} in pool {pool}" if keeper.lease else ""
            announce(f"serving on http://{host}:{port} with {workers} worker(s){on}")
        _serve(AppFactory(setup, ws), host, port, workers, log_level)
    except (_Stopped, KeyboardInterrupt):
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        keeper.stop()
        if own_dir is not None:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(own_dir, ignore_errors=True)


def _stop_serving(reason: str, announce: Callable[[str], object] | None) -> None:
    """The keeper lost the server's lease for good: a server the pool no longer holds stops
    (fencing), as Uvicorn stops on SIGTERM, closing its record on the way out."""
    if announce is not None:
        announce(f"stopping: {reason}")
    os.kill(os.getpid(), signal.SIGTERM)


def _raise_stopped(signum: int, _frame: FrameType | None) -> None:
    raise _Stopped(signum)


def advertised_host(host: str) -> str:
    """The address others reach a server on: its host name when it listens on every address."""
    if host in ("0.0.0.0", "::", ""):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host


def check_port(host: str, port: int) -> None:
    """Raise :class:`~shipyard.errors.InvalidInput` in one line naming the address if a server
    could not listen on it now: bind it as Uvicorn will (``SO_REUSEADDR``), then let it go."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise InvalidInput(_cannot_listen(host, port, exc)) from None


def _cannot_listen(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use (another server?): stop it, or choose "
            "another port with --port (0: any free one)"
        )
    if exc.errno == errno.EACCES:
        return f"port {port} on {host} needs privileges to listen on: choose one above 1023"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}: it is not an address of this machine (--host)"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


def describe_stale(record: InstanceRecord) -> str:
    """One line for a stale server record that was just closed."""
    lease = ""
    if record.lease_id:
        lease = f"; its lease {record.lease_id} in pool {record.pool} is {record.lease_status}"
    return (
        f"found a server that did not stop cleanly and marked it stopped: {record.url} "
        f"(pid {record.pid} on {record.machine}): {record.stop_reason}{lease}"
    )


def free_port(host: str) -> int:
    """A port nobody listens on now (for ``--port 0``: the URL must be known before serving)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        found: int = s.getsockname()[1]
        return found


def _serve(factory: AppFactory, host: str, port: int, workers: int, log_level: str) -> None:
    """Run Uvicorn as ``uvicorn.run`` does, with the factory object itself as the app: ``run``
    takes only an import string for several workers, while its supervisor pickles the config,
    and so the factory with its setup, into each spawned worker just the same."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG, STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(
        factory if workers == 1 else factory.for_spawned_workers(),
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http="httptools" if _has_httptools() else "h11",
        loop="uvloop" if _has_uvloop() else "asyncio",
        log_level=log_level,
        log_config=None if logging.getLogger().handlers else LOGGING_CONFIG,
        access_log=False,
        lifespan="on",
    )
    if workers > 1:
        Multiprocess(config, sockets=[bind_tcp(host, port)]).run()
        return
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


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
