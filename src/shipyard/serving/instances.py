"""Running model servers: where each answers, what it serves, and the quota it holds.

``shipyard serve`` records itself as a :class:`~shipyard.store.serving.ServingInstance` row
when it starts (its URL, the live models, the pool and lease it holds) and renews the row from
a background thread (:class:`InstanceKeeper`), which also heartbeats the server's quota lease
with what the server's processes really use (psutil: CPU cores, resident memory). A clean
shutdown marks the row stopped and releases the lease; after a SIGKILL both simply stop being
renewed: the row counts as gone ``ttl_s`` after its last heartbeat and the lease expires and is
reclaimed by quota's own reclaim (the daemon's ``quota.reclaim``).

The control loop reads :func:`live_instances` to know which URLs to probe for a live model, and
the serving monitors read :func:`instance_leases` for the ``serving.quota`` check.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psutil
from sqlalchemy import or_, select, update

from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.errors import QuotaError, ShipyardError
from shipyard.quota import Lease, LeaseManager, LeaseRequest
from shipyard.serving.live import live_versions
from shipyard.store import Store, new_id
from shipyard.store.quota import QuotaLease
from shipyard.store.serving import ServingInstance

log = logging.getLogger("shipyard.serving")

DEFAULT_CPU_PER_WORKER = 1.0
DEFAULT_MEMORY_PER_WORKER_BYTES = 512 * 1024**2


@dataclass(frozen=True)
class Instance:
    """A model server that is running now (its heartbeat is fresher than its ttl)."""

    id: str
    url: str
    models: list[str]
    pool: str | None
    lease_id: str | None
    workers: int
    heartbeat_at: float


@dataclass(frozen=True)
class InstanceLease:
    """A live server's lease: what it was granted and what it last reported using."""

    instance: Instance
    pool: str
    granted: dict[str, float]
    used: dict[str, float]
    status: str


def live_model_names(store: Store) -> list[str]:
    """The models the store says are live (a default alias, or a deploy traffic split)."""
    with store.session() as s:
        return sorted(live_versions(s))


def register_instance(
    store: Store,
    *,
    url: str,
    host: str,
    workers: int,
    ttl_s: float,
    now: float,
    models: list[str],
    pool: str | None = None,
    lease_id: str | None = None,
    pid: int | None = None,
) -> str:
    """Record a server that starts answering at ``url``; returns the instance id."""
    instance_id = new_id()
    with store.session() as s:
        s.add(
            ServingInstance(
                id=instance_id,
                url=url,
                host=host,
                pid=os.getpid() if pid is None else pid,
                workers=workers,
                models=models,
                pool=pool,
                lease_id=lease_id,
                started_at=now,
                heartbeat_at=now,
                ttl_s=ttl_s,
            )
        )
    return instance_id


def heartbeat_instance(
    store: Store,
    instance_id: str,
    now: float,
    models: list[str] | None = None,
    lease_id: str | None = None,
) -> None:
    values: dict[str, Any] = {"heartbeat_at": now}
    if models is not None:
        values["models"] = models
    if lease_id is not None:
        values["lease_id"] = lease_id
    with store.session() as s:
        s.execute(
            update(ServingInstance)
            .where(ServingInstance.id == instance_id, ServingInstance.stopped_at.is_(None))
            .values(**values)
        )


def stop_instance(store: Store, instance_id: str, now: float) -> None:
    with store.session() as s:
        s.execute(
            update(ServingInstance)
            .where(ServingInstance.id == instance_id, ServingInstance.stopped_at.is_(None))
            .values(stopped_at=now)
        )


def live_instances(store: Store, now: float, model: str | None = None) -> list[Instance]:
    """Servers not stopped whose heartbeat is within their ttl; only those serving ``model``
    when given."""
    with store.session() as s:
        rows = list(
            s.scalars(
                select(ServingInstance)
                .where(ServingInstance.stopped_at.is_(None))
                .order_by(ServingInstance.started_at)
            )
        )
    out = []
    for r in rows:
        if r.heartbeat_at + r.ttl_s < now:
            continue
        models = [str(m) for m in r.models]
        if model is not None and model not in models:
            continue
        out.append(
            Instance(r.id, r.url, models, r.pool, r.lease_id, r.workers, float(r.heartbeat_at))
        )
    return out


def instance_leases(store: Store, now: float, model: str) -> list[InstanceLease]:
    """The held quota lease of each live server of ``model`` (servers without one are left out).

    Reads quota's lease rows by id, read-only: the lease id is the server's own record."""
    instances = [i for i in live_instances(store, now, model) if i.lease_id]
    if not instances:
        return []
    with store.session() as s:
        rows = {
            r.id: r
            for r in s.scalars(
                select(QuotaLease).where(or_(*(QuotaLease.id == i.lease_id for i in instances)))
            )
        }
    out = []
    for i in instances:
        row = rows.get(i.lease_id or "")
        if row is None:
            continue
        out.append(
            InstanceLease(
                i,
                row.pool,
                {k: float(v) for k, v in row.resources.items()},
                {k: float(v) for k, v in row.used.items()},
                row.status,
            )
        )
    return out


class ProcessUsage:
    """CPU cores and resident memory used by a process and all its descendants (the Uvicorn
    supervisor and its workers), measured with psutil.

    CPU cores = Δ(user + system CPU seconds of every process) / Δwall seconds between two
    samples, the way ``top`` computes a process' %CPU (÷ 100); memory = Σ RSS in bytes. A
    process that appeared since the last sample (a new worker) counts all its CPU time.
    """

    def __init__(self, pid: int | None = None, clock: Callable[[], float] = time.monotonic):
        self.root = psutil.Process(pid or os.getpid())
        self._clock = clock
        self._cpu_s: dict[int, float] = {}
        self._at: float | None = None

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return [self.root]

    def sample(self) -> dict[str, float]:
        """``{"cpu": cores, "memory": bytes}`` since the previous sample (cpu 0 on the first)."""
        now = self._clock()
        cpu_s: dict[int, float] = {}
        rss = 0.0
        delta = 0.0
        for p in self._tree():
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    used = float(t.user + t.system)
                    rss += float(p.memory_info().rss)
            except psutil.Error:
                continue  # it ended between listing and reading
            cpu_s[p.pid] = used
            before = self._cpu_s.get(p.pid)
            if before is not None:
                delta += max(used - before, 0.0)
            elif self._at is not None:
                delta += used  # started since the last sample (a new worker)
        cores = delta / (now - self._at) if self._at is not None and now > self._at else 0.0
        self._cpu_s, self._at = cpu_s, now
        return {"cpu": cores, "memory": rss}


class InstanceKeeper:
    """The server's record and lease, kept alive by a background thread.

    The thread has its own :class:`LeaseManager` (managers are not thread-safe); the one
    passed in acquires and releases, from the main thread.
    """

    def __init__(
        self,
        store: Store,
        *,
        url: str,
        host: str,
        workers: int,
        ttl_s: float,
        leases: LeaseManager | None = None,
        request: LeaseRequest | None = None,
        wait_s: float | None = 60.0,
        clock: Clock = SYSTEM_CLOCK,
        usage: ProcessUsage | None = None,
        models: Callable[[], list[str]] | None = None,
    ) -> None:
        self.store = store
        self.url = url
        self.host = host
        self.workers = workers
        self.ttl_s = ttl_s
        self.leases = leases
        self.request = request
        self.wait_s = wait_s
        self.clock = clock
        self.usage = usage or ProcessUsage()
        self._models = models or (lambda: live_model_names(store))
        self.lease: Lease | None = None
        self.instance_id: str | None = None
        self.last_used: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_leases: LeaseManager | None = None

    @property
    def interval_s(self) -> float:
        """A third of the ttl: two heartbeats may be missed before the lease expires."""
        return self.ttl_s / 3

    def start(self) -> None:
        """Take the lease (raises :class:`~shipyard.errors.QuotaError` or ``NotFound`` when
        the pool cannot grant it, leaving nothing behind), record the instance, start the
        heartbeat thread."""
        if self.leases is not None and self.request is not None:
            self.lease = self.leases.acquire(self.request, timeout_s=self.wait_s)
        try:
            self.instance_id = register_instance(
                self.store,
                url=self.url,
                host=self.host,
                workers=self.workers,
                ttl_s=self.ttl_s,
                now=self.clock.time(),
                models=self._models(),
                pool=self.lease.pool if self.lease else None,
                lease_id=self.lease.lease_id if self.lease else None,
            )
        except BaseException:
            self._release()
            raise
        self.usage.sample()  # the baseline of the first CPU measurement
        if self.leases is not None:
            self._thread_leases = LeaseManager(
                self.store, clock=self.clock, lease_ttl_s=self.leases.lease_ttl_s
            )
        self._thread = threading.Thread(target=self._loop, name="shipyard-serve-lease", daemon=True)
        self._thread.start()

    def beat(self) -> None:
        """One heartbeat: measure, renew the lease with the measurement, renew the record."""
        used = self.usage.sample()
        self.last_used = used
        new_lease_id = None
        if self.lease is not None and self._thread_leases is not None:
            try:
                self.lease = self._thread_leases.heartbeat(self.lease, used=used)
            except QuotaError as exc:
                # reclaimed (the machine slept past the ttl?): ask again, without waiting
                log.error("%s; asking the pool again", exc)
                assert self.request is not None
                self.lease = self._thread_leases.acquire(self.request, timeout_s=0)
                new_lease_id = self.lease.lease_id
        assert self.instance_id is not None
        heartbeat_instance(
            self.store, self.instance_id, self.clock.time(), self._models(), new_lease_id
        )

    def _loop(self) -> None:
        wait_s = min(1.0, self.interval_s)  # a first measurement soon after the start
        while not self._stop.wait(wait_s):
            try:
                self.beat()
            except Exception as exc:  # the store may be away for a while: keep serving
                log.warning("serving heartbeat failed: %s", exc)
            wait_s = self.interval_s

    def stop(self) -> None:
        """Stop the thread, mark the instance stopped and release the lease (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._thread_leases is not None:
            self._thread_leases.close()
            self._thread_leases = None
        try:
            if self.instance_id is not None:
                stop_instance(self.store, self.instance_id, self.clock.time())
        finally:
            self._release()

    def _release(self) -> None:
        if self.lease is not None and self.leases is not None:
            try:
                self.leases.release(self.lease, reason="model server stopped")
            except ShipyardError as exc:
                log.error("could not release lease %s: %s", self.lease.lease_id, exc)
            self.lease = None
        if self.leases is not None:
            self.leases.close()


def serving_request(
    host: str,
    port: int,
    pool: str,
    workers: int,
    cpu: float | None = None,
    memory: str | float | None = None,
) -> LeaseRequest:
    """The lease a server asks of ``pool``: the sizes given, else 1 CPU and 512 MiB per worker."""
    resources: Mapping[str, float | str] = {
        "cpu": DEFAULT_CPU_PER_WORKER * workers if cpu is None else cpu,
        "memory": DEFAULT_MEMORY_PER_WORKER_BYTES * workers if memory is None else memory,
    }
    return LeaseRequest(f"serve:{host}:{port}", resources, pool=pool, step="serve")
