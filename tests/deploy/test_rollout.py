"""A rollout moved by people (deploy/rollout.py) on SQLite and PostgreSQL: starting one,
approvals, pause, resume and abort, on real models."""

from __future__ import annotations

import numpy as np
import pytest
from deploy_testkit import TEST_POLICY, put_v1_in_production, serve_interval, start_v2_canary

from shipyard.clock import FakeClock
from shipyard.deploy.loop import advance_rollouts
from shipyard.deploy.policy import set_policy
from shipyard.deploy.rollout import (
    abort,
    approve,
    audit_trail,
    get_rollout,
    pause,
    promote,
    resume,
    start_rollout,
)
from shipyard.errors import ApprovalRequired, DeployError
from shipyard.registry import Registry
from shipyard.serving import split as traffic
from shipyard.statuses import RolloutState
from shipyard.workspace import Workspace


class TestApprovals:
    def test_author_may_not_approve_their_own_version(
        self, ws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        set_policy(
            ws.store,
            "churn",
            TEST_POLICY.replace("[alice, bob]", "[alice, bob, carol]"),
            actor="admin",
            clock=clock,
        )
        r = start_rollout(ws.store, "churn", 1, actor="carol", author="carol", clock=clock)
        with pytest.raises(DeployError, match="four-eyes"):
            approve(ws.store, r.id, actor="carol", clock=clock)
        assert get_rollout(ws.store, r.id).approvals == []

    def test_only_members_of_the_roles_approve_and_any_member_will_do(
        self, ws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        r = start_rollout(ws.store, "churn", 1, actor="carol", author="carol", clock=clock)
        with pytest.raises(DeployError, match="not a member of approver"):
            approve(ws.store, r.id, actor="mallory", clock=clock)
        assert approve(ws.store, r.id, actor="bob", clock=clock).state == RolloutState.STAGING

    def test_one_person_cannot_approve_twice_for_two(
        self, ws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        put_v1_in_production(ws, models, clock)
        rid = start_v2_canary(ws, models, clock)
        approve(ws.store, rid, actor="alice", purpose="speedup", clock=clock)
        with pytest.raises(DeployError, match="already approved"):
            approve(ws.store, rid, actor="alice", purpose="speedup", clock=clock)
        with pytest.raises(ApprovalRequired, match="needs 2 speed-up"):
            promote(ws.store, rid, actor="alice", clock=clock)
        approve(ws.store, rid, actor="bob", purpose="speedup", clock=clock)
        view = promote(ws.store, rid, actor="bob", clock=clock)
        assert (view.state, view.step_index, view.weight_pct) == (RolloutState.CANARY, 1, 50.0)
        assert "promoted" in view.reason  # the reason follows the step, not the first entry
        with pytest.raises(ApprovalRequired):  # the approvals were used up by that promotion
            promote(ws.store, rid, actor="bob", clock=clock)

    def test_one_active_rollout_per_model(
        self, ws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        r = start_rollout(ws.store, "churn", 1, actor="carol", clock=clock)
        with pytest.raises(DeployError, match=f"already has rollout {r.id}"):
            start_rollout(ws.store, "churn", 2, actor="dave", clock=clock)


class TestHandControls:
    def test_pause_holds_and_resume_continues(
        self, ws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        rng = np.random.default_rng(4)
        put_v1_in_production(ws, models, clock)
        rid = start_v2_canary(ws, models, clock)
        assert (
            pause(ws.store, rid, actor="alice", reason="holiday", clock=clock).state
            == RolloutState.PAUSED
        )
        serve_interval(ws, clock, rng)
        advance_rollouts(ws, clock)
        assert get_rollout(ws.store, rid).verdicts == []  # nothing judged while paused
        other = start_rollout(ws.store, "other", 1, actor="x", clock=clock).id
        with pytest.raises(DeployError, match="not paused"):
            resume(ws.store, other, actor="x", clock=clock)
        view = resume(ws.store, rid, actor="alice", clock=clock)
        assert view.state == RolloutState.CANARY
        actions = [e.action for e in audit_trail(ws.store, rid)]
        assert actions[-2:] == ["rollout.paused", "rollout.canary"]

    def test_abort_sends_traffic_back_to_stable(
        self, ws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        put_v1_in_production(ws, models, clock)
        rid = start_v2_canary(ws, models, clock)
        view = abort(ws.store, rid, actor="alice", reason="wrong build", clock=clock)
        assert view.state == RolloutState.ROLLED_BACK
        assert traffic.live_split(ws.store, "churn").weights == {1: 100.0}  # type: ignore[union-attr]
        with pytest.raises(DeployError, match="already rolled_back"):
            abort(ws.store, rid, actor="alice", clock=clock)


def test_two_simultaneous_deploys_of_one_model_start_one_rollout(
    ws: Workspace, models: Registry, clock: FakeClock
) -> None:
    import threading

    results: list[str] = []

    def deploy(version: int) -> None:
        try:
            results.append(start_rollout(ws.store, "churn", version, actor="x", clock=clock).id)
        except DeployError as exc:
            results.append(f"refused: {exc}")

    threads = [threading.Thread(target=deploy, args=(v,)) for v in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(not r.startswith("refused") for r in results) == 1, results
