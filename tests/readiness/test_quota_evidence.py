"""Readiness judges the quota plan as `quota plan` does: live servers are matched to their
models' reservations (issue #17, the plan counts what runs)."""

from __future__ import annotations

from datetime import UTC, datetime

from shipyard.clock import FakeClock
from shipyard.quota.admission import LeaseManager
from shipyard.quota.pools import PoolSpec, apply_pools, list_pools, resolve
from shipyard.readiness.evidence import _quota
from shipyard.serving.instances import register_instance, serving_request
from shipyard.store.quota import QuotaReservation
from shipyard.store.tables import PipelineRecord
from shipyard.workspace import Workspace

MONDAY = datetime(2026, 11, 23, tzinfo=UTC).timestamp()


def test_a_live_servers_lease_is_not_counted_beside_its_models_reservation(
    ws: Workspace, clock: FakeClock
) -> None:
    clock.at(MONDAY)
    pool = PoolSpec(name="shared", capacity={"cpu": 4, "memory": "8Gi"})
    apply_pools(ws.store, [resolve(pool, 1.0)], clock)
    with ws.store.session() as s:
        s.add(
            QuotaReservation(
                pool="shared",
                name="serving:churn@champion",
                resources={"cpu": 3.0},
                basis="test",
                updated_at=clock.time(),
            )
        )
        s.add(  # something scheduled, so that the plan has lines to judge
            PipelineRecord(
                name="etl",
                kind="data",
                file="etl.py",
                schedule="0 2 * * *",
                spec={"pool": "shared"},
                updated_at=0.0,
            )
        )
    leases = LeaseManager(ws.store, clock=clock, lease_ttl_s=60)
    held = leases.acquire(serving_request("127.0.0.1", 8080, "shared", 2))  # 2 CPUs
    pools = list_pools(ws.store)
    # a lease no live server names counts whole: 3 reserved + 2 held > 4
    assert _quota(ws, pools).plan_fits is False
    register_instance(
        ws.store,
        url="http://127.0.0.1:8080",
        host="127.0.0.1",
        workers=2,
        ttl_s=60,
        now=clock.time(),
        models=["churn"],
        pool="shared",
        lease_id=held.lease_id,
    )
    facts = _quota(ws, pools)
    assert facts.plan_fits is True and facts.plan_problems == ()  # 2 held within churn's 3
    leases.release(held)
    leases.close()
