"""Running model servers: where each answers, what it serves, and the quota it holds.

``shipyard serve`` records itself as a :class:`~shipyard.store.serving.ServingInstance` row
when it starts (its URL, the machine and pid, the live models, the pool and lease it holds) and
renews the row from a background thread (:class:`InstanceKeeper`), which also heartbeats the
server's quota lease with what the server's processes really use (psutil: CPU cores, resident
memory). A clean shutdown marks the row stopped and releases the lease.

A server that is killed cannot close its own record. Its workers end with it
(:mod:`shipyard.supervision`), and the first of them closes the record and releases the
lease on its way out (:func:`close_instance`). When nobody could (a single-process server, the
whole process group killed, a lost machine) the record is *stale*: its process is provably
gone (same machine: the pid is gone, a zombie, or a newer process) or its heartbeat is older
than its ``ttl_s``. :func:`list_instances` shows it as such, and the next server that starts
closes it with the reason (:func:`reap_stale_instances`), releasing its lease when the process
is provably gone; otherwise the lease expires and quota's own reclaim takes it back.

The control loop reads :func:`live_instances` to know which URLs to probe for a live model, and
the serving monitors read :func:`instance_leases` for the ``serving.quota`` check.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psutil
from sqlalchemy import select, update

from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.errors import QuotaError, QuotaExceeded, ShipyardError
from shipyard.process_tree import sample_tree
from shipyard.quota import Lease, LeaseManager, LeaseRequest, list_pools, parse_amounts
from shipyard.quota.resources import format_amount
from shipyard.quota.views import holders_in, leases_in
from shipyard.serving.live import live_versions
from shipyard.store import Store, new_id
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
class InstanceRecord:
    """A server's record as a listing shows it: ``state`` is ``live``, ``stale`` (its process
    is gone or silent but the record was never closed; ``why`` says which) or ``stopped``
    (closed: ``stop_reason`` says by whom when it was not a clean shutdown)."""

    id: str
    url: str
    machine: str | None
    pid: int
    workers: int
    models: list[str]
    pool: str | None
    lease_id: str | None
    lease_status: str | None
    started_at: float
    heartbeat_at: float
    stopped_at: float | None
    stop_reason: str | None
    state: str
    why: str = ""
    process_gone: bool = False


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
    with store.session(readonly=True) as s:
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
                machine=this_machine(),
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
        beat = s.execute(
            update(ServingInstance)
            .where(ServingInstance.id == instance_id, ServingInstance.stopped_at.is_(None))
            .values(**values)
        )
        if beat.rowcount == 0:  # type: ignore[attr-defined]
            # closed as stale by someone else while this server was alive (its store was away
            # past the ttl): a heartbeat proves it lives, so the record is open again
            reopened = s.execute(
                update(ServingInstance)
                .where(ServingInstance.id == instance_id)
                .values(**values, stopped_at=None, stop_reason=None)
            )
            if reopened.rowcount:  # type: ignore[attr-defined]
                log.warning("serving instance %s was closed as stale; reopened it", instance_id)


def stop_instance(store: Store, instance_id: str, now: float, reason: str | None = None) -> bool:
    """Close the record (once: returns whether this call closed it)."""
    with store.session() as s:
        result = s.execute(
            update(ServingInstance)
            .where(ServingInstance.id == instance_id, ServingInstance.stopped_at.is_(None))
            .values(stopped_at=now, stop_reason=reason)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def this_machine() -> str:
    """The name of the machine this process runs on, as its records store it."""
    return socket.gethostname()


def process_gone(pid: int, machine: str | None, started_at: float) -> bool:
    """Whether the server process ``pid`` that started at ``started_at`` on ``machine`` is
    provably gone: only a process on this machine can tell (the pid is free, a zombie, or taken
    by a process created after the server started)."""
    if machine is None or machine != this_machine():
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return True
        return proc.create_time() > started_at + 1.0  # the pid was reused (1 s: clock grain)
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # it exists but cannot be read (another user's): not provably gone
        return False


def list_instances(
    store: Store, now: float, *, include_stopped: bool = False, ids: list[str] | None = None
) -> list[InstanceRecord]:
    """Every server record not closed (``live`` or ``stale``), oldest first; the closed ones
    too with ``include_stopped``; only those of ``ids`` when given. Reads only: closing stale
    records is :func:`reap_stale_instances`'s job."""
    query = select(ServingInstance).order_by(ServingInstance.started_at)
    if not include_stopped:
        query = query.where(ServingInstance.stopped_at.is_(None))
    if ids is not None:
        query = query.where(ServingInstance.id.in_(ids))
    with store.session(readonly=True) as s:
        rows = list(s.scalars(query))
        leases = leases_in(s, [r.lease_id for r in rows if r.lease_id])
    statuses = {lease_id: lease.status for lease_id, lease in leases.items()}
    out = []
    for r in rows:
        gone, state, why = False, "live", ""
        if r.stopped_at is not None:
            state = "stopped"
        elif gone := process_gone(r.pid, r.machine, r.started_at):
            state, why = "stale", f"process {r.pid} on {r.machine} is gone"
        elif r.heartbeat_at + r.ttl_s < now:
            state, why = "stale", f"no heartbeat for {now - r.heartbeat_at:.0f}s"
        out.append(
            InstanceRecord(
                r.id,
                r.url,
                r.machine,
                r.pid,
                r.workers,
                [str(m) for m in r.models],
                r.pool,
                r.lease_id,
                statuses.get(r.lease_id) if r.lease_id else None,
                float(r.started_at),
                float(r.heartbeat_at),
                r.stopped_at,
                r.stop_reason,
                state,
                why,
                gone,
            )
        )
    return out


def close_instance(
    store: Store,
    instance_id: str,
    *,
    reason: str,
    clock: Clock = SYSTEM_CLOCK,
    lease_ttl_s: float = 30.0,
    release_lease: bool = True,
) -> bool:
    """Close a record its own server could not close, with ``reason``, and release the lease
    it holds (when ``release_lease``: the server's processes are provably gone, or going).
    Returns whether this call closed it (of several closers, one does; the others change
    nothing)."""
    if not stop_instance(store, instance_id, clock.time(), reason[:200]):
        return False
    with store.session() as s:
        lease_id = s.scalar(
            select(ServingInstance.lease_id).where(ServingInstance.id == instance_id)
        )
        view = leases_in(s, [lease_id]).get(lease_id) if lease_id and release_lease else None
        lease = view.held() if view is not None else None
    if lease is not None:
        leases = LeaseManager(store, clock=clock, lease_ttl_s=lease_ttl_s)
        try:
            leases.release(lease, reason=reason[:200])
        finally:
            leases.close()
    return True


def reap_stale_instances(
    store: Store, *, clock: Clock = SYSTEM_CLOCK, lease_ttl_s: float = 30.0, by: str = ""
) -> list[InstanceRecord]:
    """Close every stale record (see the module doc) with the reason, releasing the lease of a
    server whose process is provably gone (a silent one's lease is left to expire: it may only
    have lost its store for a while). Returns the records this call closed, as they are now."""
    closed = []
    for record in list_instances(store, clock.time()):
        if record.state != "stale":
            continue
        reason = f"{record.why}; closed by {by}" if by else record.why
        if close_instance(
            store,
            record.id,
            reason=reason,
            clock=clock,
            lease_ttl_s=lease_ttl_s,
            release_lease=record.process_gone,
        ):
            closed.append(record.id)
    if not closed:
        return []
    return list_instances(store, clock.time(), include_stopped=True, ids=closed)


def live_instances(store: Store, now: float, model: str | None = None) -> list[Instance]:
    """Servers not stopped whose heartbeat is within their ttl; only those serving ``model``
    when given."""
    with store.session(readonly=True) as s:
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

    Reads quota's leases by id (:func:`shipyard.quota.views.leases_in`): the lease id is the
    server's own record."""
    instances = [i for i in live_instances(store, now, model) if i.lease_id]
    if not instances:
        return []
    with store.session(readonly=True) as s:
        leases = leases_in(s, [i.lease_id for i in instances if i.lease_id])
    out = []
    for i in instances:
        lease = leases.get(i.lease_id or "")
        if lease is None:
            continue
        out.append(
            InstanceLease(i, lease.pool, dict(lease.resources), dict(lease.used), lease.status)
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

    def sample(self) -> dict[str, float]:
        """``{"cpu": cores, "memory": bytes}`` since the previous sample (cpu 0 on the first)."""
        now = self._clock()
        tree = sample_tree(self.root)
        cpu_s = dict(tree.cpu_seconds_by_pid) if tree is not None else {}
        rss = float(tree.rss_bytes) if tree is not None else 0.0
        delta = 0.0
        for pid, used in cpu_s.items():
            before = self._cpu_s.get(pid)
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
        on_lost: Callable[[str], object] | None = None,
    ) -> None:
        self.store = store
        self.on_lost = on_lost
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
        self.progress_every_s = 10.0

    @property
    def interval_s(self) -> float:
        """A third of the ttl: two heartbeats may be missed before the lease expires."""
        return self.ttl_s / 3

    def start(self, progress: Callable[[str], object] | None = None) -> None:
        """Take the lease (raises :class:`~shipyard.errors.QuotaError` or ``NotFound`` when
        the pool cannot grant it, leaving nothing behind; while the pool is full, says so
        through ``progress`` every ``progress_every_s``), record the instance, start the
        heartbeat thread."""
        if self.leases is not None and self.request is not None:
            self.lease = self._acquire(self.leases, self.request, progress)
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

    def _acquire(
        self,
        leases: LeaseManager,
        request: LeaseRequest,
        progress: Callable[[str], object] | None,
    ) -> Lease:
        asked = _describe(parse_amounts(request.resources, what="the server's request"))
        pool = request.pool or leases.default_pool
        try:
            lease_id = leases.submit(request)
        except QuotaExceeded as exc:
            raise QuotaError(f"{exc}; {_way_out(self.store, pool, request.pipeline)}") from None
        start = self.clock.monotonic()
        reported = None
        try:
            while (lease := leases.poll(lease_id)) is None:
                waited = self.clock.monotonic() - start
                if self.wait_s is not None and waited >= self.wait_s:
                    raise QuotaError(
                        f"pool {pool!r} had no room for {asked} within {self.wait_s:g}s "
                        f"({_holders(self.store, pool)}); try again later, wait longer "
                        "with --wait, or ask for less with --cpu/--memory"
                    )
                if progress is not None and (
                    reported is None or waited - reported >= self.progress_every_s
                ):
                    limit = "" if self.wait_s is None else f" of at most {self.wait_s:g}s"
                    progress(
                        f"waiting for room in pool {pool!r} for {asked} "
                        f"({waited:.0f}s{limit}; {_holders(self.store, pool)})"
                    )
                    reported = waited
                self.clock.sleep(leases.poll_interval_s)
        except BaseException:
            try:
                leases.cancel(lease_id)
            except ShipyardError as exc:
                log.error("could not take request %s out of the queue: %s", lease_id, exc)
            raise
        return lease

    def beat(self) -> None:
        """One heartbeat: measure, renew the lease with the measurement, renew the record."""
        used = self.usage.sample()
        self.last_used = used
        new_lease_id = None
        if self.lease is not None and self._thread_leases is not None:
            try:
                self.lease = self._thread_leases.heartbeat(self.lease, used=used)
            except QuotaError as exc:
                # reclaimed (the machine slept past the ttl?): ask again, without waiting; a
                # server the pool cannot hold any more must stop (fencing, as a step does)
                log.error("%s; asking the pool again", exc)
                assert self.request is not None
                try:
                    self.lease = self._thread_leases.acquire(self.request, timeout_s=0)
                except ShipyardError as again:
                    lost, self.lease = self.lease, None
                    reason = (
                        f"lease {lost.lease_id} in pool {lost.pool} was lost ({exc}) and the pool "
                        f"cannot grant it again ({again}): the server stops"
                    )
                    log.error(reason)
                    if self.on_lost is not None:
                        self.on_lost(reason)
                    return
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


def _describe(amounts: Mapping[str, float]) -> str:
    return ", ".join(f"{r}={format_amount(r, v)}" for r, v in sorted(amounts.items()))


def _way_out(store: Store, pool_name: str, pipeline: str) -> str:
    """What a server may ask of the pool, and how to get there (for a refusal)."""
    pool = next((p for p in list_pools(store) if p.name == pool_name), None)
    if pool is None:
        return ""
    member = pool.member(pipeline)
    most = {r: min(v, member.cap.get(r, v)) for r, v in pool.capacity.items()}
    return (
        f"a server may hold at most {_describe(most)} there: ask for less with --cpu/--memory "
        f"(default: {DEFAULT_CPU_PER_WORKER:g} CPU and "
        f"{format_amount('memory', DEFAULT_MEMORY_PER_WORKER_BYTES)} per worker), or raise the "
        "pool's capacity (or its default_cap_fraction, the share one server may take) in your "
        "pools file and `shipyard quota apply` it"
    )


def _holders(store: Store, pool: str) -> str:
    """Who holds the pool now, in a few words."""
    with store.session(readonly=True) as s:
        names = holders_in(s, pool)
    if not names:
        return "others wait ahead"
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"held by {shown}"
