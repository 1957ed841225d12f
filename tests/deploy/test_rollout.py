"""The rollout state machine on SQLite and PostgreSQL: every transition, approvals, the audit
log, rollback (also after completion), on real models and real flushed serving windows."""

from __future__ import annotations

import numpy as np
import pytest
from deploy_testkit import TEST_POLICY, write_window
from sqlalchemy import select

from shipyard.clock import FakeClock
from shipyard.deploy.diagnosis import Diagnoser
from shipyard.deploy.loop import advance_rollouts, engine_for
from shipyard.deploy.policy import set_policy
from shipyard.deploy.production import production_history
from shipyard.deploy.rollback import rollback
from shipyard.deploy.rollout import (
    CANARY,
    FAILED,
    PAUSED,
    PRODUCTION,
    ROLLED_BACK,
    ROLLOUT_FAILED_METRIC,
    STAGING,
    WAITING,
    abort,
    approve,
    audit_trail,
    get_rollout,
    pause,
    promote,
    resume,
    rollouts_of,
    start_rollout,
)
from shipyard.errors import ApprovalRequired, DeployError
from shipyard.registry import Registry
from shipyard.serving.split import live_split
from shipyard.store import Store
from shipyard.store.deploy import Diagnosis
from shipyard.store.tables import MetricPoint
from shipyard.workspace import Workspace


def _author(models: Registry, version: int) -> str:
    return models.get("churn", version).created_by


def put_v1_in_production(ws: Workspace, models: Registry, clock: FakeClock) -> str:
    r = start_rollout(ws.store, "churn", 1, actor="carol", author=_author(models, 1), clock=clock)
    approve(ws.store, r.id, actor="alice", clock=clock)
    advance_rollouts(ws, clock)
    assert get_rollout(ws.store, r.id).state == PRODUCTION
    return r.id


def start_v2_canary(ws: Workspace, models: Registry, clock: FakeClock) -> str:
    r = start_rollout(ws.store, "churn", 2, actor="dave", author=_author(models, 2), clock=clock)
    approve(ws.store, r.id, actor="bob", clock=clock)
    clock.advance(1)
    advance_rollouts(ws, clock)
    assert get_rollout(ws.store, r.id).state == CANARY
    return r.id


def serve_interval(
    ws: Workspace,
    clock: FakeClock,
    rng: np.random.Generator,
    *,
    canary_error: float = 0.01,
    canary_requests: int = 300,
    stable_requests: int = 2700,
) -> None:
    start = clock.time()
    clock.advance(60)
    write_window(
        ws.store,
        "churn",
        2,
        start,
        clock.time(),
        requests=canary_requests,
        error_rate=canary_error,
        rng=rng,
    )
    write_window(
        ws.store,
        "churn",
        1,
        start,
        clock.time(),
        requests=stable_requests,
        error_rate=0.01,
        rng=rng,
    )


class TestFirstDeployment:
    def test_first_version_waits_for_approval_then_stages_then_goes_to_production(
        self, dws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        r = start_rollout(dws.store, "churn", 1, actor="carol", author="carol", clock=clock)
        assert r.state == WAITING
        advance_rollouts(dws, clock)
        assert get_rollout(dws.store, r.id).state == WAITING  # nobody approved yet
        assert approve(dws.store, r.id, actor="alice", clock=clock).state == STAGING
        advance_rollouts(dws, clock)
        view = get_rollout(dws.store, r.id)
        assert view.state == PRODUCTION
        split = live_split(dws.store, "churn")
        assert split is not None and split.weights == {1: 100.0}
        actions = [e.action for e in audit_trail(dws.store, r.id)]
        assert actions == [
            "rollout.start",
            "rollout.approve.start",
            "rollout.staging",
            "rollout.staging.passed",
            "rollout.production",
        ]
        smoke = audit_trail(dws.store, r.id)[3].detail["smoke"]
        assert smoke["loads"] and smoke["answers"] and smoke["rows"] == 3
        assert models.get("churn").version == 1  # the default alias follows production
        clock.advance(5)
        models.set_alias("churn", "champion", 2, reason="by hand")
        advance_rollouts(dws, clock)
        assert models.get("churn").version == 2  # a later move by hand is not overridden


class TestApprovals:
    def test_author_may_not_approve_their_own_version(
        self, dws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        set_policy(
            dws.store,
            "churn",
            TEST_POLICY.replace("[alice, bob]", "[alice, bob, carol]"),
            actor="admin",
            clock=clock,
        )
        r = start_rollout(dws.store, "churn", 1, actor="carol", author="carol", clock=clock)
        with pytest.raises(DeployError, match="four-eyes"):
            approve(dws.store, r.id, actor="carol", clock=clock)
        assert get_rollout(dws.store, r.id).approvals == []

    def test_only_members_of_the_roles_approve_and_any_member_will_do(
        self, dws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        r = start_rollout(dws.store, "churn", 1, actor="carol", author="carol", clock=clock)
        with pytest.raises(DeployError, match="not a member of approver"):
            approve(dws.store, r.id, actor="mallory", clock=clock)
        assert approve(dws.store, r.id, actor="bob", clock=clock).state == STAGING

    def test_one_person_cannot_approve_twice_for_two(
        self, dws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        put_v1_in_production(dws, models, clock)
        rid = start_v2_canary(dws, models, clock)
        approve(dws.store, rid, actor="alice", purpose="speedup", clock=clock)
        with pytest.raises(DeployError, match="already approved"):
            approve(dws.store, rid, actor="alice", purpose="speedup", clock=clock)
        with pytest.raises(ApprovalRequired, match="needs 2 speed-up"):
            promote(dws.store, rid, actor="alice", clock=clock)
        approve(dws.store, rid, actor="bob", purpose="speedup", clock=clock)
        view = promote(dws.store, rid, actor="bob", clock=clock)
        assert (view.state, view.step_index, view.weight_pct) == (CANARY, 1, 50.0)
        assert "promoted" in view.reason  # the reason follows the step, not the first entry
        with pytest.raises(ApprovalRequired):  # the approvals were used up by that promotion
            promote(dws.store, rid, actor="bob", clock=clock)

    def test_one_active_rollout_per_model(
        self, dws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        r = start_rollout(dws.store, "churn", 1, actor="carol", clock=clock)
        with pytest.raises(DeployError, match=f"already has rollout {r.id}"):
            start_rollout(dws.store, "churn", 2, actor="dave", clock=clock)


class TestCanary:
    def test_healthy_canary_goes_through_every_step_to_production(
        self, dws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        rng = np.random.default_rng(1)
        put_v1_in_production(dws, models, clock)
        rid = start_v2_canary(dws, models, clock)
        split = live_split(dws.store, "churn")
        assert split is not None and (split.stable, split.canary, split.canary_weight_pct) == (
            1,
            2,
            10.0,
        )
        weights = []
        for _ in range(8):
            serve_interval(dws, clock, rng)
            advance_rollouts(dws, clock)
            view = get_rollout(dws.store, rid)
            weights.append(view.weight_pct)
            if view.state == PRODUCTION:
                break
        assert view.state == PRODUCTION, view.reason
        assert weights == [10.0, 50.0, 50.0, 100.0]
        assert live_split(dws.store, "churn").weights == {2: 100.0}  # type: ignore[union-attr]
        looks = view.verdicts
        assert all(v["outcome"] == "pass" for v in looks)
        metric = looks[0]["metrics"][0]
        assert {
            "statistic",
            "p_value",
            "effect",
            "ci_low",
            "ci_high",
            "n_canary",
            "n_stable",
            "reason",
            "alpha",
        } <= set(metric)

    def test_canary_with_more_errors_is_rolled_back_with_diagnosis_and_alert(
        self, dws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        rng = np.random.default_rng(2)
        put_v1_in_production(dws, models, clock)
        rid = start_v2_canary(dws, models, clock)
        for _ in range(3):
            serve_interval(dws, clock, rng, canary_error=0.08)
            advance_rollouts(dws, clock)
            if get_rollout(dws.store, rid).state != CANARY:
                break
        view = get_rollout(dws.store, rid)
        assert view.state == ROLLED_BACK
        assert "error_rate" in view.reason
        assert live_split(dws.store, "churn").weights == {1: 100.0}  # type: ignore[union-attr]
        with dws.store.session() as s:
            diag = s.scalar(select(Diagnosis).where(Diagnosis.rollout_id == rid))
            alert = s.scalar(select(MetricPoint).where(MetricPoint.name == ROLLOUT_FAILED_METRIC))
        assert diag is not None and diag.report["failed_metrics"][0]["metric"] == "error_rate"
        assert alert is not None and alert.labels["rollout"] == rid
        last = audit_trail(dws.store, rid)[-1]
        assert last.action == "rollout.rolled_back" and last.actor == "shipyard-daemon"
        assert last.detail["failed_metrics"][0]["n_canary"] > 0

    def test_too_little_traffic_extends_then_pauses_instead_of_judging(
        self, dws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        rng = np.random.default_rng(3)
        put_v1_in_production(dws, models, clock)
        rid = start_v2_canary(dws, models, clock)
        outcomes = []
        for _ in range(6):
            serve_interval(dws, clock, rng, canary_requests=5)
            advance_rollouts(dws, clock)
            view = get_rollout(dws.store, rid)
            outcomes.append(view.state)
            if view.state != CANARY:
                break
        assert outcomes[:5] == [CANARY] * 5
        assert outcomes[-1] == PAUSED
        assert all(v["outcome"] == "extend" for v in view.verdicts)
        assert "too little data" in view.reason
        split = live_split(dws.store, "churn")
        assert split is not None and split.canary_weight_pct == 10.0

    def test_on_no_data_fail_rolls_back_at_once(
        self, dws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        set_policy(
            dws.store,
            "churn",
            TEST_POLICY.replace("on_no_data: extend", "on_no_data: fail"),
            actor="admin",
            clock=clock,
        )
        put_v1_in_production(dws, models, clock)
        rid = start_v2_canary(dws, models, clock)
        clock.advance(60)
        advance_rollouts(dws, clock)
        view = get_rollout(dws.store, rid)
        assert view.state == ROLLED_BACK and "no data" in view.reason

    def test_failing_staging_smoke_check_fails_the_rollout_without_moving_traffic(
        self, dws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        put_v1_in_production(dws, models, clock)
        set_policy(
            dws.store,
            "churn",
            TEST_POLICY.replace("max_latency_ms: 5000", "max_latency_ms: 0.000001"),
            actor="admin",
            clock=clock,
        )
        r = start_rollout(dws.store, "churn", 2, actor="dave", author="dave", clock=clock)
        approve(dws.store, r.id, actor="alice", clock=clock)
        advance_rollouts(dws, clock)
        view = get_rollout(dws.store, r.id)
        assert view.state == FAILED
        assert audit_trail(dws.store, r.id)[-1].detail["smoke"]["meets_latency"] is False
        assert live_split(dws.store, "churn").weights == {1: 100.0}  # type: ignore[union-attr]


class TestHandControls:
    def test_pause_holds_and_resume_continues(
        self, dws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        rng = np.random.default_rng(4)
        put_v1_in_production(dws, models, clock)
        rid = start_v2_canary(dws, models, clock)
        assert pause(dws.store, rid, actor="alice", reason="holiday", clock=clock).state == PAUSED
        serve_interval(dws, clock, rng)
        advance_rollouts(dws, clock)
        assert get_rollout(dws.store, rid).verdicts == []  # nothing judged while paused
        other = start_rollout(dws.store, "other", 1, actor="x", clock=clock).id
        with pytest.raises(DeployError, match="not paused"):
            resume(dws.store, other, actor="x", clock=clock)
        view = resume(dws.store, rid, actor="alice", clock=clock)
        assert view.state == CANARY
        actions = [e.action for e in audit_trail(dws.store, rid)]
        assert actions[-2:] == ["rollout.paused", "rollout.canary"]

    def test_abort_sends_traffic_back_to_stable(
        self, dws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        put_v1_in_production(dws, models, clock)
        rid = start_v2_canary(dws, models, clock)
        view = abort(dws.store, rid, actor="alice", reason="wrong build", clock=clock)
        assert view.state == ROLLED_BACK
        assert live_split(dws.store, "churn").weights == {1: 100.0}  # type: ignore[union-attr]
        with pytest.raises(DeployError, match="already rolled_back"):
            abort(dws.store, rid, actor="alice", clock=clock)

    def test_rollback_after_completion_restores_the_previous_version(
        self, dws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        rng = np.random.default_rng(5)
        put_v1_in_production(dws, models, clock)
        rid = start_v2_canary(dws, models, clock)
        for _ in range(8):
            serve_interval(dws, clock, rng)
            advance_rollouts(dws, clock)
            if get_rollout(dws.store, rid).state == PRODUCTION:
                break
        assert get_rollout(dws.store, rid).state == PRODUCTION
        clock.advance(3600)
        result = rollback(dws.store, "churn", actor="alice", clock=clock)
        assert (result["from"], result["to"], result["rollout"]) == (2, 1, rid)
        assert live_split(dws.store, "churn").weights == {1: 100.0}  # type: ignore[union-attr]
        assert get_rollout(dws.store, rid).state == ROLLED_BACK
        history = production_history(dws.store, "churn")
        assert [(h.version, h.via) for h in history] == [
            (1, "rollout"),
            (2, "rollout"),
            (1, "rollback"),
        ]
        advance_rollouts(dws, clock)
        assert models.get("churn").version == 1
        with pytest.raises(DeployError, match="already the production version"):
            rollback(dws.store, "churn", actor="alice", to_version=1, clock=clock)
        again = rollback(dws.store, "churn", actor="alice", to_version=2, clock=clock)
        assert again["to"] == 2

    def test_rollback_with_nothing_to_go_back_to_is_refused(
        self, dws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        with pytest.raises(DeployError, match="no earlier production version"):
            rollback(dws.store, "churn", actor="alice", clock=clock)


class TestNoDoubleActions:
    def test_a_decision_made_on_a_stale_view_is_not_applied(
        self, dws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        """Two daemons looking at once: the second commits nothing."""
        rng = np.random.default_rng(6)
        put_v1_in_production(dws, models, clock)
        rid = start_v2_canary(dws, models, clock)
        serve_interval(dws, clock, rng)
        a, b = engine_for(dws, clock), engine_for(dws, clock)
        seen = a.snapshot(rid)
        assert b.advance(rid) is not None  # b judges the interval first
        assert a.decide(seen) is None  # a's decision was made on what b already changed
        assert len(get_rollout(dws.store, rid).verdicts) == 1


def test_two_simultaneous_deploys_of_one_model_start_one_rollout(
    dws: Workspace, models: Registry, clock: FakeClock
) -> None:
    import threading

    results: list[str] = []

    def deploy(version: int) -> None:
        try:
            results.append(start_rollout(dws.store, "churn", version, actor="x", clock=clock).id)
        except DeployError as exc:
            results.append(f"refused: {exc}")

    threads = [threading.Thread(target=deploy, args=(v,)) for v in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(not r.startswith("refused") for r in results) == 1, results


class Crash(BaseException):
    """A daemon dying at one exact point (nothing after it runs, nothing catches it)."""


class TestRevertBeforeDiagnosis:
    """A failing canary loses its traffic in its own transaction; the slow diagnosis follows."""

    def _fail_canary(
        self, ws: Workspace, models: Registry, clock: FakeClock, diagnosis: Diagnoser
    ) -> str:
        rng = np.random.default_rng(2)
        put_v1_in_production(ws, models, clock)
        rid = start_v2_canary(ws, models, clock)
        engine = engine_for(ws, clock)
        engine.diagnosis = diagnosis
        for _ in range(3):
            serve_interval(ws, clock, rng, canary_error=0.08)
            engine.advance_all()
            if get_rollout(ws.store, rid).state != CANARY:
                break
        return rid

    def _report(self, ws: Workspace, rid: str) -> dict[str, object]:
        with ws.store.session() as s:
            row = s.scalars(select(Diagnosis).where(Diagnosis.rollout_id == rid)).one()
            return dict(row.report)

    def test_the_canary_traffic_is_reverted_and_committed_before_the_diagnosis_runs(
        self, dws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        other = Store(dws.store.url)  # another connection: it sees only what was committed
        seen: list[tuple[object, ...]] = []

        class Watching(Diagnoser):
            def complete(self, diagnosis_id: int) -> dict[str, object] | None:
                with other.session() as s:
                    status = s.get(Diagnosis, diagnosis_id).report["status"]  # type: ignore[union-attr]
                split = live_split(other, "churn")
                seen.append((split.weights if split else None, status))
                return super().complete(diagnosis_id)

        try:
            rid = self._fail_canary(dws, models, clock, Watching(dws.store, dws.artifacts, models))
            assert get_rollout(other, rid).state == ROLLED_BACK
        finally:
            other.dispose()
        assert seen == [({1: 100.0}, "pending")]
        report = self._report(dws, rid)
        assert report["status"] == "complete"
        assert report["failed_metrics"][0]["metric"] == "error_rate"  # type: ignore[index]
        assert report["drifting_inputs"]["why"] != "the diagnosis is still running"  # type: ignore[index]

    def test_a_crash_between_revert_and_diagnosis_is_diagnosed_on_the_next_pass(
        self, dws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        class Dying(Diagnoser):
            def complete(self, diagnosis_id: int) -> dict[str, object] | None:
                raise Crash

        with pytest.raises(Crash):
            self._fail_canary(dws, models, clock, Dying(dws.store, dws.artifacts, models))
        [rid] = [r.id for r in rollouts_of(dws.store, "churn") if r.version == 2]
        assert get_rollout(dws.store, rid).state == ROLLED_BACK
        assert live_split(dws.store, "churn").weights == {1: 100.0}  # type: ignore[union-attr]
        assert self._report(dws, rid)["status"] == "pending"

        advance_rollouts(dws, clock)  # the next daemon's first pass
        report = self._report(dws, rid)
        assert report["status"] == "complete"
        assert report["failed_metrics"][0]["metric"] == "error_rate"  # type: ignore[index]
        assert report["disagreements"]["why"] != "the diagnosis is still running"  # type: ignore[index]
        advance_rollouts(dws, clock)
        assert self._report(dws, rid) == report  # completed once
