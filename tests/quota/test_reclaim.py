"""A lease whose holder process was SIGKILLed comes back to the pool after its expiry."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

from sqlalchemy import select

from shipyard.clock import FakeClock
from shipyard.quota.admission import LeaseManager, LeaseRequest, reclaim_expired
from shipyard.quota.pools import PoolSpec, apply_pools, resolve
from shipyard.store import Store
from shipyard.store.quota import QuotaLease

HOLDER = textwrap.dedent(
    """
    import sys, time
    from shipyard.quota.admission import LeaseManager, LeaseRequest
    from shipyard.store import Store
    leases = LeaseManager(Store(sys.argv[1], migrate=False), lease_ttl_s=30, default_pool="p")
    lease = leases.acquire(LeaseRequest("etl", {"cpu": 4}))
    print(lease.lease_id, flush=True)
    time.sleep(600)
    """
)


def test_lease_of_a_sigkilled_holder_is_reclaimed_after_expiry(store: Store) -> None:
    apply_pools(store, [resolve(PoolSpec(name="p", capacity={"cpu": 4}), 1.0)])
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, store.url], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    lease_id = holder.stdout.readline().strip()
    holder.stdout.close()
    holder.send_signal(signal.SIGKILL)
    assert holder.wait(timeout=10) == -signal.SIGKILL
    clock = FakeClock(time.time())
    leases = LeaseManager(store, clock=clock, lease_ttl_s=30, default_pool="p")
    waiter = leases.submit(LeaseRequest("train", {"cpu": 2}))
    assert reclaim_expired(store, clock) == []  # not yet expired: still counted
    assert leases.poll(waiter) is None
    clock.advance(31)
    assert leases.poll(waiter) is not None  # reclaimed opportunistically at admission
    with store.session() as s:
        row = s.get(QuotaLease, lease_id)
        assert row is not None and row.status == "expired"
        assert s.scalar(select(QuotaLease.status).where(QuotaLease.id == waiter)) == "held"
    leases.close()
