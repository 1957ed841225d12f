"""Many processes admitting into one pool at once: never over capacity, no deadlock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from shipyard.quota.pools import MemberSpec, PoolSpec, apply_pools, resolve
from shipyard.store import Store
from shipyard.store.quota import QuotaEvent, QuotaLease

WORKER = Path(__file__).with_name("admission_worker.py")
PROCESSES = 8
ATTEMPTS = 250
CAPACITY = {"cpu": 5.0, "memory": 3 * 1024.0**3}


@pytest.mark.slow
def test_eight_processes_never_over_admit(store: Store) -> None:
    """8 processes × 250 attempts: replaying the lease log, the held total never exceeds the
    pool at any instant, and every process finishes (no deadlock)."""
    spec = PoolSpec(
        name="hot",
        capacity={"cpu": 5, "memory": "3Gi"},
        members=[MemberSpec(pipeline=f"p{i}", share=0.3, cap=1.0) for i in range(3)],
    )
    apply_pools(store, [resolve(spec, 0.5)])
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), store.url, str(ATTEMPTS), str(seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(PROCESSES)
    ]
    grants = 0
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        grants += int(out.strip())
    with store.session() as s:
        leases = {row.id: row for row in s.scalars(select(QuotaLease))}
        events = list(s.scalars(select(QuotaEvent).order_by(QuotaEvent.id)))
    assert len(leases) == PROCESSES * ATTEMPTS
    granted_events = sum(1 for e in events if e.kind == "granted")
    # a request may be granted just as its worker gives up on it (then it is cancelled)
    assert granted_events == sum(1 for r in leases.values() if r.granted_at is not None)
    assert granted_events >= grants > 0
    assert {row.status for row in leases.values()} <= {"released", "cancelled"}
    held: set[str] = set()
    peak = dict.fromkeys(CAPACITY, 0.0)
    for event in events:
        if event.kind == "granted":
            assert event.lease_id not in held
            held.add(event.lease_id)
        else:
            held.discard(event.lease_id)
        for resource, capacity in CAPACITY.items():
            in_use = sum(leases[i].resources.get(resource, 0.0) for i in held)
            assert in_use <= capacity + 1e-6, f"over capacity at event {event.id}"
            assert abs(in_use - event.held_total[resource]) < 1e-6
            peak[resource] = max(peak[resource], in_use)
    assert not held
    assert peak["memory"] == CAPACITY["memory"]  # the pool was really contended


def test_one_manager_shared_by_threads_never_over_admits(store: Store) -> None:
    """Threads of one process sharing a LeaseManager (a server's heartbeat thread and its
    requests): its one SQLite connection and file lock go to one thread at a time."""
    import threading

    from shipyard.quota.admission import LeaseManager, LeaseRequest

    apply_pools(store, [resolve(PoolSpec(name="t", capacity={"cpu": 2}), 1.0)])
    leases = LeaseManager(store, default_pool="t", lease_ttl_s=60, poll_interval_s=0.001)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(40):
                grant = leases.acquire(LeaseRequest("p", {"cpu": 1}), timeout_s=30)
                leases.heartbeat(grant, used={"cpu": 0.5})
                leases.release(grant)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    leases.close()
    assert errors == []
    with store.session() as s:
        events = list(s.scalars(select(QuotaEvent).order_by(QuotaEvent.id)))
    assert sum(1 for e in events if e.kind == "granted") == 160
    assert max(e.held_total.get("cpu", 0.0) for e in events) <= 2.0 + 1e-9
