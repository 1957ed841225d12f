"""The store creates quota's tables; the runner's Admission seam takes and gives back leases."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from shipyard.config import load_settings
from shipyard.errors import InvalidInput, QuotaExceeded
from shipyard.pipelines.executor import StepRequest
from shipyard.quota.admission import QuotaAdmission
from shipyard.quota.pools import MemberSpec, PoolSpec, apply_pools, list_pools, resolve
from shipyard.quota.resources import parse_quantity
from shipyard.store import Store


def test_store_creates_the_quota_tables(store: Store) -> None:
    tables = set(inspect(store.engine).get_table_names())
    assert {"quota_pools", "quota_members", "quota_leases", "quota_events"} <= tables
    assert "0002_quota" in store.applied_revisions()
    indexes = {i["name"] for i in inspect(store.engine).get_indexes("quota_leases")}
    assert "ix_quota_leases_pool_status" in indexes


def test_runner_seam_acquires_heartbeats_and_releases(store: Store) -> None:
    apply_pools(store, [resolve(PoolSpec(name="local", capacity={"cpu": 2}), 1.0)])
    admission = QuotaAdmission.for_workspace(store, load_settings())
    request = StepRequest("etl", "run1", "load", "sr1", {"cpu": 2.0})
    grant = admission.acquire(request)
    assert grant.granted == {"cpu": 2.0} and grant.detail["pool"] == "local"
    admission.heartbeat(grant)
    admission.release(grant)
    again = admission.acquire(request)  # capacity came back
    admission.release(again)
    with pytest.raises(QuotaExceeded):
        admission.acquire(StepRequest("etl", "run1", "big", "sr2", {"cpu": 3.0}))
    admission.leases.close()


def test_quantities_follow_kubernetes_notation() -> None:
    assert parse_quantity("4Gi") == 4 * 1024**3
    assert parse_quantity("500m") == 0.5
    assert parse_quantity("2G") == 2e9
    assert parse_quantity(3) == 3.0
    for bad in ("lots", "-1", "1Xi", True):
        with pytest.raises(InvalidInput):
            parse_quantity(bad)


def test_default_cap_is_the_configured_fraction(store: Store) -> None:
    spec = PoolSpec(name="s", capacity={"cpu": 10}, members=[MemberSpec(pipeline="a", share=0.1)])
    apply_pools(store, [resolve(spec, 0.4)])
    (pool,) = list_pools(store)
    assert pool.members["a"].cap == {"cpu": 4.0}
    assert pool.member("stranger").share == {"cpu": 0.0}
    assert pool.member("stranger").cap == {"cpu": 4.0}
