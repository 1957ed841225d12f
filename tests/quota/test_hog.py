"""The hog named: the default rule QuotaHog fires when one pipeline holds more than its share of a
shared pool while others wait (naming the pipeline, what it holds, who waits and how long), and
resolves when that stops — a scripted timeline on a fake clock."""

from __future__ import annotations

from sqlalchemy import select

from shipyard.alerting.defaults import HOG_WAIT_S, default_rules
from shipyard.alerting.rules import Rule
from shipyard.alerting.state import apply_rules
from shipyard.clock import FakeClock
from shipyard.quota.admission import LeaseManager, LeaseRequest
from shipyard.quota.pools import MemberSpec, PoolSpec, apply_pools, resolve
from shipyard.quota.usage import HOG_WAIT, record_usage
from shipyard.statuses import AlertState
from shipyard.store.alerting import AlertRecord
from shipyard.store.tables import MetricPoint
from shipyard.workspace import Workspace


def hog_rule() -> Rule:
    (rule,) = [r for r in default_rules() if r.name == "QuotaHog"]
    return rule


def tick(ws: Workspace, clock: FakeClock, t: float) -> list[AlertRecord]:
    """At ``t``: the daemon's quota sample, then the rule; the QuotaHog alerts."""
    clock.at(t)
    record_usage(ws.store, clock)
    with ws.store.session() as s:
        apply_rules(s, [hog_rule()], clock.time())
    with ws.store.session() as s:
        return list(s.scalars(select(AlertRecord).where(AlertRecord.rule.like("QuotaHog/%"))))


def test_hog_rule_fires_naming_the_hog_and_resolves_when_it_stops(
    ws: Workspace, clock: FakeClock
) -> None:
    spec = PoolSpec(
        name="shared",
        capacity={"cpu": 12, "memory": "48Gi"},
        members=[
            MemberSpec(pipeline="greedy", share=0.25, cap=1.0),
            MemberSpec(pipeline="etl", share=0.25, cap=0.5),
            MemberSpec(pipeline="train", share=0.5, cap=1.0),
        ],
    )
    apply_pools(ws.store, [resolve(spec, 0.5)])
    leases = LeaseManager(ws.store, clock=clock, lease_ttl_s=3600, default_pool="shared")
    t0 = clock.time()
    greedy = [
        leases.acquire(LeaseRequest("greedy", {"cpu": 3, "memory": "6Gi"}, step=f"g{i}"))
        for i in range(4)
    ]
    assert tick(ws, clock, t0 + 10) == []  # borrowing the idle pool harms nobody
    etl = leases.submit(LeaseRequest("etl", {"cpu": 2}, step="e"))  # at t0 + 10
    clock.advance(1)
    train = leases.submit(LeaseRequest("train", {"cpu": 4}, step="t"))
    assert tick(ws, clock, t0 + 20) == []  # others wait, but not for long yet
    (alert,) = tick(ws, clock, t0 + 20 + HOG_WAIT_S + 1)
    assert alert.state == AlertState.FIRING
    assert alert.labels["pipeline"] == "greedy" and alert.labels["pool"] == "shared"
    summary, description = alert.annotations["summary"], alert.annotations["description"]
    assert "greedy" in summary and "shared" in summary
    assert "cpu 12 of 12 (share 3)" in description
    assert "etl (1 request, 311s)" in description and "train (1 request, 310s)" in description
    # what it holds changes: the same alert, its description updated (not a second alert)
    clock.at(t0 + 400)
    leases.release(greedy.pop())  # etl's 2 CPUs are admitted into the 3 freed
    assert leases.poll(etl) is not None
    (alert,) = tick(ws, clock, t0 + 400)
    assert alert.state == AlertState.FIRING
    assert "cpu 9 of 12" in alert.annotations["description"]
    assert "etl" not in alert.annotations["description"]
    # greedy gives the rest back: train is admitted, nobody waits, the alert resolves
    clock.at(t0 + 500)
    for grant in greedy:
        leases.release(grant)
    assert leases.poll(train) is not None
    (alert,) = tick(ws, clock, t0 + 500)
    assert alert.state == AlertState.RESOLVED
    with ws.store.session() as s:
        values = list(
            s.scalars(
                select(MetricPoint.value)
                .where(MetricPoint.name == HOG_WAIT)
                .where(MetricPoint.ts == t0 + 500, MetricPoint.value > 0)
            )
        )
    assert values == []
    leases.close()
