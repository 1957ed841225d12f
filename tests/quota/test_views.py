"""Quota's leases as other wings read them: frozen views by id, and who holds a pool."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shipyard.clock import FakeClock
from shipyard.quota.admission import LeaseManager, LeaseRequest
from shipyard.quota.pools import MemberSpec, PoolSpec, apply_pools, resolve
from shipyard.quota.views import LeaseView, holders_in, leases_in
from shipyard.store import Store


@pytest.fixture
def leases(store: Store) -> Iterator[LeaseManager]:
    spec = PoolSpec(
        name="serving",
        capacity={"cpu": 4, "memory": "4Gi"},
        members=[MemberSpec(pipeline=p, share=0.5, cap=1.0) for p in ("api", "batch")],
    )
    apply_pools(store, [resolve(spec, 0.5)])
    manager = LeaseManager(store, clock=FakeClock(), lease_ttl_s=30, default_pool="serving")
    yield manager
    manager.close()


def test_a_held_lease_reads_as_the_grant_its_holder_releases(
    store: Store, leases: LeaseManager
) -> None:
    lease = leases.acquire(LeaseRequest("api", {"cpu": 1, "memory": "1Gi"}, step="serve"))
    leases.heartbeat(lease, used={"cpu": 0.25, "memory": 2.0**29})
    with store.session(readonly=True) as s:
        found = leases_in(s, [lease.lease_id, "no-such-lease"])
    assert list(found) == [lease.lease_id]
    view = found[lease.lease_id]
    assert isinstance(view, LeaseView)
    assert (view.pool, view.pipeline, view.step, view.status) == ("serving", "api", "serve", "held")
    assert view.resources == {"cpu": 1.0, "memory": 2.0**30}
    assert view.used == {"cpu": 0.25, "memory": 2.0**29}
    grant = view.held()
    assert grant is not None
    assert (grant.lease_id, grant.pool, grant.resources, grant.fence) == (
        lease.lease_id,
        "serving",
        lease.resources,
        lease.fence,
    )
    leases.release(grant, reason="done")
    with store.session(readonly=True) as s:
        ended = leases_in(s, [lease.lease_id])[lease.lease_id]
    assert ended.status == "released" and ended.held() is None


def test_holders_are_the_pipelines_holding_the_pool_now(store: Store, leases: LeaseManager) -> None:
    api = leases.acquire(LeaseRequest("api", {"cpu": 1}))
    leases.acquire(LeaseRequest("batch", {"cpu": 1}))
    leases.acquire(LeaseRequest("api", {"cpu": 1}))
    with store.session(readonly=True) as s:
        assert holders_in(s, "serving") == ["api", "batch"]
        assert holders_in(s, "elsewhere") == []
        assert leases_in(s, []) == {}
    leases.release(api)
    with store.session(readonly=True) as s:
        assert holders_in(s, "serving") == ["api", "batch"]  # api holds another
