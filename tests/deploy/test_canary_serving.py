"""A rollout's traffic split served by a real model server on loopback: the sticky canary sends
the share of distinct users its weight says, always the same users, raising the weight only
moves users from stable to canary, and an abort returns everyone to stable within 2 s. A canary
that fails on what the server saw is rolled back and pages (the default CanaryFailed rule)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from deploy_testkit import classifier, training_frame
from sklearn.linear_model import LogisticRegression
from sqlalchemy import select

from server_testkit import serving
from shipyard.alerting.config import build_config
from shipyard.alerting.cycle import evaluate
from shipyard.clock import FakeClock
from shipyard.deploy.loop import advance_rollouts
from shipyard.deploy.policy import set_policy
from shipyard.deploy.rollout import abort, get_rollout, promote, start_rollout
from shipyard.registry import Registry
from shipyard.serving.routing import choose_version, routing_key
from shipyard.serving.server import build_app
from shipyard.serving.split import live_split
from shipyard.serving.telemetry import Telemetry
from shipyard.statuses import RolloutState
from shipyard.store.alerting import AlertRecord
from shipyard.workspace import Workspace

POLICY = """
approvals: {start: {count: 0}, speedup: {count: 0}}
canary:
  interval_s: 60
  steps:
    - {weight_pct: 10, min_duration_s: 600, min_samples: 100}
    - {weight_pct: 50, min_duration_s: 600, min_samples: 100}
"""
USERS = [f"u{i}" for i in range(1000)]


@dataclass
class Served:
    ws: Workspace
    client: httpx.Client
    body: dict[str, object]

    def version_for(self, user: str | None) -> int:
        headers = {"x-user-id": user} if user is not None else {}
        r = self.client.post("/v2/models/churn/infer", json=self.body, headers=headers)
        assert r.status_code == 200, r.text
        return int(r.headers["x-shipyard-model-version"])

    def versions(self, users: list[str]) -> dict[str, int]:
        return {u: self.version_for(u) for u in users}


@pytest.fixture
def served(ws: Workspace) -> Iterator[Served]:
    """churn v1 in production, v2 in the first canary step (10 %), a server refreshing 0.5 s."""
    x, _ = training_frame()
    for author, c in (("carol", 1.0), ("dave", 0.5)):
        Registry(ws.store, ws.artifacts, ws.clock, author).register(
            "churn", classifier(c), training_data=x
        )
    set_policy(ws.store, "churn", POLICY, actor="admin", clock=ws.clock)
    first = start_rollout(ws.store, "churn", 1, actor="carol", clock=ws.clock)
    advance_rollouts(ws)  # nothing to compare a first version with: straight to production
    assert get_rollout(ws.store, first.id).state == RolloutState.PRODUCTION
    second = start_rollout(ws.store, "churn", 2, actor="dave", clock=ws.clock)
    advance_rollouts(ws)
    assert get_rollout(ws.store, second.id).state == RolloutState.CANARY
    app = build_app(ws, monitoring=False, refresh_interval_s=0.5)
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64",
                        "data": x.to_numpy()[:1].tolist()}]}  # fmt: skip
    with serving(app, lifespan="on") as url, httpx.Client(base_url=url, timeout=5) as client:
        yield Served(ws, client, body)


def _rollout_id(ws: Workspace) -> str:
    split = live_split(ws.store, "churn")
    assert split is not None and split.rollout_id is not None
    return split.rollout_id


def _wait_for_weight(s: Served, user: str, version: int) -> None:
    deadline = time.monotonic() + 5
    while s.version_for(user) != version:
        assert time.monotonic() < deadline, f"{user} never reached version {version}"
        time.sleep(0.05)


def test_canary_serves_its_weight_of_distinct_users_the_way_deploy_routes_them(
    served: Served,
) -> None:
    split = live_split(served.ws.store, "churn")
    assert split is not None and split.canary == 2 and split.canary_weight_pct == 10
    seen = served.versions(USERS)
    expected = {
        u: choose_version(routing_key({"x-user-id": u}, "-"), split.weights, 2, split.cohort)
        for u in USERS
    }
    assert seen == expected  # the server routes exactly as deploy's pure function says
    share = sum(v == 2 for v in seen.values()) / len(USERS)
    assert 0.07 < share < 0.13


def test_a_user_always_gets_the_same_version(served: Served) -> None:
    first = served.versions(USERS[:100])
    assert set(first.values()) == {1, 2}
    for _ in range(3):
        assert served.versions(USERS[:100]) == first


def test_requests_without_a_user_are_spread_by_request_id(served: Served) -> None:
    canary = sum(served.version_for(None) == 2 for _ in range(600)) / 600
    assert 0.05 < canary < 0.16


def test_raising_the_weight_only_moves_users_from_stable_to_canary(served: Served) -> None:
    before = served.versions(USERS)
    in_canary = [u for u, v in before.items() if v == 2]
    promote(served.ws.store, _rollout_id(served.ws), actor="dave", clock=served.ws.clock)
    split = live_split(served.ws.store, "churn")
    assert split is not None and split.canary_weight_pct == 50
    newly = next(
        u
        for u in USERS
        if before[u] == 1
        and choose_version(routing_key({"x-user-id": u}, "-"), split.weights, 2, split.cohort) == 2
    )
    _wait_for_weight(served, newly, 2)
    after = served.versions(USERS)
    assert all(after[u] == 2 for u in in_canary)  # nobody left the canary
    share = sum(v == 2 for v in after.values()) / len(USERS)
    assert 0.45 < share < 0.55


def test_abort_returns_all_traffic_to_stable_within_two_seconds(served: Served) -> None:
    canary_users = [u for u, v in served.versions(USERS[:300]).items() if v == 2]
    assert canary_users
    abort(served.ws.store, _rollout_id(served.ws), actor="alice", clock=served.ws.clock)
    committed = time.monotonic()
    last_canary = committed
    while time.monotonic() - committed < 2.5:
        for u in canary_users[:5]:
            if served.version_for(u) == 2:
                last_canary = time.monotonic()
        time.sleep(0.01)
    assert last_canary - committed <= 2.0
    assert set(served.versions(USERS[:300]).values()) == {1}


def test_a_canary_failing_on_served_traffic_pages_with_its_rollout_in_the_runbook_hint(
    ws: Workspace, clock: FakeClock
) -> None:
    """Serving telemetry → canary analysis → rollback → shipyard_rollout_failed → CanaryFailed."""
    x, y = training_frame()
    for author in ("carol", "dave"):
        Registry(ws.store, ws.artifacts, clock, author).register(
            "churn", LogisticRegression().fit(x, y), training_data=x
        )
    set_policy(ws.store, "churn", POLICY, actor="admin", clock=clock)
    start_rollout(ws.store, "churn", 1, actor="carol", clock=clock)
    advance_rollouts(ws, clock)
    rid = start_rollout(ws.store, "churn", 2, actor="dave", clock=clock).id
    clock.advance(1)
    advance_rollouts(ws, clock)
    assert get_rollout(ws.store, rid).state == RolloutState.CANARY
    registry = Registry.of(ws)
    stable, canary = registry.get("churn", 1), registry.get("churn", 2)
    telemetry = Telemetry(ws.store, None, sample_rate=0, clock=clock, worker="w1")
    rows = x.to_numpy()
    for i in range(2000):  # the canary fails one request in five, the stable one none
        row = rows[i % len(rows)][None, :]
        if i % 10 == 0:
            if i % 50 == 0:
                telemetry.error(canary, "model", 500, 0.01, f"c{i}", "ValueError: boom")
            else:
                telemetry.ok(canary, row, np.array([1]), None, 0.01, f"c{i}")
        else:
            telemetry.ok(stable, row, np.array([1]), None, 0.01, f"s{i}")
    clock.advance(61)
    assert telemetry.flush() == 2
    advance_rollouts(ws, clock)
    assert get_rollout(ws.store, rid).state == RolloutState.ROLLED_BACK
    result = evaluate(ws.store, build_config({}, home=ws.settings.home), clock.time())
    fired = [t for t in result.transitions if t.rule == "CanaryFailed/page" and t.new == "firing"]
    assert len(fired) == 1
    assert fired[0].labels | {"model": "churn", "version": "2", "rollout": rid} == fired[0].labels
    with ws.store.session() as s:
        alert = s.scalars(select(AlertRecord).where(AlertRecord.rule == "CanaryFailed/page")).one()
        assert alert.annotations["runbook"] == f"shipyard rollout status {rid}"
