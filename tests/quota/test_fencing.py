"""Issue #20 item 12: a lease that expires while its holder still runs. The holder is fenced —
stopped before its lease can be reclaimed and granted again — so the pool's real use never
exceeds its capacity."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from shipyard.clock import FakeClock
from shipyard.errors import QuotaError
from shipyard.pipelines.executor import Grant, StepRequest
from shipyard.pipelines.loader import load_pipeline
from shipyard.pipelines.local import LocalExecutor
from shipyard.pipelines.records import get_run
from shipyard.pipelines.runner import Runner, RunResult
from shipyard.quota.admission import (
    Lease,
    LeaseManager,
    LeaseRequest,
    QuotaAdmission,
    fence_margin_s,
    reclaim_expired,
)
from shipyard.quota.pools import PoolSpec, apply_pools, resolve
from shipyard.store import Store
from shipyard.store.quota import QuotaLease
from shipyard.workspace import Workspace

TTL_S = 4.0
SLEEPER = """
import time
from shipyard.pipelines import Pipeline, Resources, step

@step(resources=Resources(cpu=2))
def hold() -> int:
    time.sleep(120)
    return 1

pipeline = Pipeline("fenced", kind="training")

@pipeline
def build():
    hold()
"""


class StalledStore:
    """The holder's way to the store stalls, as on a loaded machine: every heartbeat and the
    release arrive ``stall_s`` late (longer than the lease's TTL)."""

    def __init__(self, inner: QuotaAdmission, stall_s: float) -> None:
        self.inner, self.stall_s = inner, stall_s

    def acquire(self, request: StepRequest) -> Grant:
        return self.inner.acquire(request)

    def heartbeat(self, grant: Grant) -> float | None:
        time.sleep(self.stall_s)
        return self.inner.heartbeat(grant)

    def release(self, grant: Grant) -> None:
        time.sleep(self.stall_s)
        self.inner.release(grant)


def _wait_for(condition: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def test_a_holder_whose_heartbeats_are_late_stops_before_its_capacity_is_granted_again(
    migrated_db_url: str, tmp_path: Path
) -> None:
    ws = Workspace.open(
        home=tmp_path / "home", db_url=migrated_db_url, quota={"lease_ttl_s": TTL_S}
    )
    apply_pools(ws.store, [resolve(PoolSpec(name="shared", capacity={"cpu": 2}), 1.0)])
    target = tmp_path / "fenced.py"
    target.write_text(SLEEPER)
    file, pipeline = load_pipeline(str(target))
    executor = LocalExecutor()
    warm = tmp_path / "warm.py"  # a first run starts the forkserver: the step then starts at once
    warm.write_text(SLEEPER.replace("time.sleep(120)", "pass").replace('"fenced"', '"warm"'))
    assert Runner(ws, executor=executor).run(*load_pipeline(str(warm))).status == "succeeded"
    results: list[RunResult] = []
    quota = QuotaAdmission.for_workspace(ws.store, ws.settings, ws.clock)
    # twice the TTL: every heartbeat lands after expiry, the release ~2 TTL after the other
    # holder's first chance to reclaim (3 TTL cost each backend 4 s more, no more coverage)
    stalled = StalledStore(quota, 2 * TTL_S)
    runner = Runner(ws, executor=executor, admission=stalled, pool="shared")
    thread = threading.Thread(target=lambda: results.append(runner.run(file, pipeline)))
    thread.start()
    try:

        def first_lease() -> QuotaLease | None:
            with ws.store.session() as s:
                return s.scalars(
                    select(QuotaLease).where(
                        QuotaLease.pipeline == "fenced", QuotaLease.status == "held"
                    )
                ).first()

        first = _wait_for(first_lease, 60, "the step's lease")
        other_store = Store(migrated_db_url, migrate=False)
        other = LeaseManager(other_store, lease_ttl_s=TTL_S, default_pool="shared")
        second = other.acquire(LeaseRequest("other", {"cpu": 2}), timeout_s=60)
        other.release(second)
        other.close()
        other_store.dispose()
    finally:
        thread.join(timeout=60)
        runner.close()
        quota.close()
    (result,) = results
    step = get_run(ws.store, result.run_id)["steps"][0]
    assert result.status == "failed"
    assert str(step["exit_reason"]).startswith(f"lease lost: lease {first.id} was not renewed")
    with ws.store.session() as s:
        row = s.get(QuotaLease, first.id)
        assert row is not None and (row.status, row.reason) == (
            "expired",
            "no heartbeat before expiry",
        )
    # reclaimed and granted again, with a newer fencing token, only after it expired ...
    assert second.granted_at >= first.expires_at
    assert second.fence > first.fence
    # ... and by then the first holder's step had been killed (the log line follows the kill)
    lines = [json.loads(x) for x in Path(str(step["log_path"])).read_text().splitlines()]
    (stopped,) = [x for x in lines if x["message"] == "lease lost: step stopped"]
    assert stopped["ts"] <= second.granted_at
    assert stopped["ts"] <= first.expires_at
    pid = int(step["pid"])
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    ws.store.dispose()


def test_a_heartbeat_with_a_stale_fencing_token_is_refused(store: Store) -> None:
    apply_pools(store, [resolve(PoolSpec(name="p", capacity={"cpu": 2}), 1.0)])
    clock = FakeClock(1_000.0)
    leases = LeaseManager(store, clock=clock, lease_ttl_s=10, default_pool="p")
    lease = leases.acquire(LeaseRequest("a", {"cpu": 1}))
    assert lease.fence == 1
    assert leases.heartbeat(lease).expires_at == 1_010.0
    stale = Lease(**{**lease.__dict__, "fence": lease.fence - 1})
    with pytest.raises(QuotaError, match="expired"):
        leases.heartbeat(stale)
    clock.advance(11)
    with pytest.raises(QuotaError):
        leases.heartbeat(lease)  # past its expiry, even before anyone reclaimed it
    assert leases.acquire(LeaseRequest("b", {"cpu": 2})).fence == 2


# -- the property: admission never grants more than capacity ---------------------------------


@dataclass
class Holder:
    """A lease holder that follows the fencing rule: it runs until its deadline."""

    lease: Lease
    deadline: float

    @classmethod
    def of(cls, lease: Lease) -> Holder:
        return cls(lease, lease.expires_at - fence_margin_s(TTL_S))


operations = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.integers(0, 2), st.sampled_from([2.0, 3.0])),
        st.tuples(st.just("poll"), st.integers(0, 9), st.just(0.0)),
        st.tuples(st.just("heartbeat"), st.integers(0, 9), st.just(0.0)),
        st.tuples(st.just("release"), st.integers(0, 9), st.just(0.0)),
        st.tuples(st.just("advance"), st.just(0), st.floats(0.0, 1.5 * TTL_S)),
        st.tuples(st.just("reclaim"), st.just(0), st.just(0.0)),
    ),
    max_size=15,
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
def test_admission_never_grants_more_than_capacity(store: Store, ops: list[Any]) -> None:
    """Over random requests, heartbeats (some late), expiries and releases: the leases held in
    the store, together with every holder still running by the fencing rule, never add up to
    more than the pool's capacity."""
    capacity = 4.0
    pool = f"p{uuid.uuid4().hex[:8]}"  # a fresh pool per example in the test's database
    apply_pools(store, [resolve(PoolSpec(name=pool, capacity={"cpu": capacity}), 1.0)])
    clock = FakeClock(1_000_000.0)
    leases = LeaseManager(store, clock=clock, lease_ttl_s=TTL_S, default_pool=pool)
    waiting: list[str] = []
    holders: dict[str, Holder] = {}
    try:
        for op, index, amount in ops:
            if op == "submit":
                lease_id = leases.submit(LeaseRequest(f"pipe{index}", {"cpu": amount}))
                waiting.append(lease_id)
            elif op == "poll" and waiting:
                lease_id = waiting[index % len(waiting)]
                try:
                    granted = leases.poll(lease_id)
                except QuotaError:  # it left the queue (expired while not polling)
                    waiting.remove(lease_id)
                    granted = None
                if granted is not None:
                    waiting.remove(lease_id)
                    holders[lease_id] = Holder.of(granted)
            elif op == "heartbeat" and holders:
                holder = list(holders.values())[index % len(holders)]
                try:
                    holder.lease = leases.heartbeat(holder.lease)
                    holder.deadline = Holder.of(holder.lease).deadline
                except QuotaError:
                    del holders[holder.lease.lease_id]  # refused: it stops
            elif op == "release" and holders:
                holder = list(holders.values())[index % len(holders)]
                leases.release(holder.lease)
                del holders[holder.lease.lease_id]
            elif op == "advance":
                clock.advance(amount)
            elif op == "reclaim":
                reclaim_expired(store, clock)
            now = clock.time()
            for lease_id in [k for k, h in holders.items() if h.deadline <= now]:
                del holders[lease_id]  # the fencing rule: it stopped at its deadline
            with store.session() as s:
                held = dict(
                    s.execute(
                        select(QuotaLease.id, QuotaLease.resources).where(
                            QuotaLease.pool == pool, QuotaLease.status == "held"
                        )
                    ).all()
                )
            assert sum(float(r["cpu"]) for r in held.values()) <= capacity + 1e-9
            in_use = {**{k: h.lease.resources for k, h in holders.items()}, **held}
            assert sum(float(r["cpu"]) for r in in_use.values()) <= capacity + 1e-9
    finally:
        leases.close()
