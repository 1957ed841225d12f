"""The rollout engine (deploy/engine.py, run by the control loop) on SQLite and PostgreSQL:
approvals → staging → canary steps → production, the canary judged on real flushed serving
windows, rollback with diagnosis and alert, and no decision applied twice."""

from __future__ import annotations

import numpy as np
import pytest
from deploy_testkit import TEST_POLICY, put_v1_in_production, serve_interval, start_v2_canary
from sqlalchemy import select

from shipyard.clock import FakeClock
from shipyard.deploy.diagnosis import Diagnoser
from shipyard.deploy.loop import advance_rollouts, engine_for
from shipyard.deploy.policy import set_policy
from shipyard.deploy.rollout import (
    ROLLOUT_FAILED_METRIC,
    approve,
    audit_trail,
    get_rollout,
    rollouts_of,
    start_rollout,
)
from shipyard.registry import Registry
from shipyard.serving import split as traffic
from shipyard.statuses import RolloutState
from shipyard.store import Store
from shipyard.store.deploy import Diagnosis
from shipyard.store.tables import MetricPoint
from shipyard.workspace import Workspace


class TestFirstDeployment:
    def test_first_version_waits_for_approval_then_stages_then_goes_to_production(
        self, ws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        r = start_rollout(ws.store, "churn", 1, actor="carol", author="carol", clock=clock)
        assert r.state == RolloutState.WAITING
        advance_rollouts(ws, clock)
        assert get_rollout(ws.store, r.id).state == RolloutState.WAITING  # nobody approved yet
        assert approve(ws.store, r.id, actor="alice", clock=clock).state == RolloutState.STAGING
        advance_rollouts(ws, clock)
        view = get_rollout(ws.store, r.id)
        assert view.state == RolloutState.PRODUCTION
        split = traffic.live_split(ws.store, "churn")
        assert split is not None and split.weights == {1: 100.0}
        actions = [e.action for e in audit_trail(ws.store, r.id)]
        assert actions == [
            "rollout.start",
            "rollout.approve.start",
            "rollout.staging",
            "rollout.staging.passed",
            "rollout.production",
        ]
        smoke = audit_trail(ws.store, r.id)[3].detail["smoke"]
        assert smoke["loads"] and smoke["answers"] and smoke["rows"] == 3
        assert models.get("churn").version == 1  # the default alias follows production
        clock.advance(5)
        models.set_alias("churn", "champion", 2, reason="by hand")
        advance_rollouts(ws, clock)
        assert models.get("churn").version == 2  # a later move by hand is not overridden


class TestCanary:
    def test_healthy_canary_goes_through_every_step_to_production(
        self, ws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        rng = np.random.default_rng(1)
        put_v1_in_production(ws, models, clock)
        rid = start_v2_canary(ws, models, clock)
        split = traffic.live_split(ws.store, "churn")
        assert split is not None and (split.stable, split.canary, split.canary_weight_pct) == (
            1,
            2,
            10.0,
        )
        weights = []
        for _ in range(8):
            serve_interval(ws, clock, rng)
            advance_rollouts(ws, clock)
            view = get_rollout(ws.store, rid)
            weights.append(view.weight_pct)
            if view.state == RolloutState.PRODUCTION:
                break
        assert view.state == RolloutState.PRODUCTION, view.reason
        assert weights == [10.0, 50.0, 50.0, 100.0]
        assert traffic.live_split(ws.store, "churn").weights == {2: 100.0}  # type: ignore[union-attr]
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
        self, ws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        rng = np.random.default_rng(2)
        put_v1_in_production(ws, models, clock)
        rid = start_v2_canary(ws, models, clock)
        for _ in range(3):
            serve_interval(ws, clock, rng, canary_error=0.08)
            advance_rollouts(ws, clock)
            if get_rollout(ws.store, rid).state != RolloutState.CANARY:
                break
        view = get_rollout(ws.store, rid)
        assert view.state == RolloutState.ROLLED_BACK
        assert "error_rate" in view.reason
        assert traffic.live_split(ws.store, "churn").weights == {1: 100.0}  # type: ignore[union-attr]
        with ws.store.session() as s:
            diag = s.scalar(select(Diagnosis).where(Diagnosis.rollout_id == rid))
            alert = s.scalar(select(MetricPoint).where(MetricPoint.name == ROLLOUT_FAILED_METRIC))
        assert diag is not None and diag.report["failed_metrics"][0]["metric"] == "error_rate"
        assert alert is not None and alert.labels["rollout"] == rid
        last = audit_trail(ws.store, rid)[-1]
        assert last.action == "rollout.rolled_back" and last.actor == "shipyard-daemon"
        assert last.detail["failed_metrics"][0]["n_canary"] > 0

    def test_too_little_traffic_extends_then_pauses_instead_of_judging(
        self, ws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        rng = np.random.default_rng(3)
        put_v1_in_production(ws, models, clock)
        rid = start_v2_canary(ws, models, clock)
        outcomes = []
        for _ in range(6):
            serve_interval(ws, clock, rng, canary_requests=5)
            advance_rollouts(ws, clock)
            view = get_rollout(ws.store, rid)
            outcomes.append(view.state)
            if view.state != RolloutState.CANARY:
                break
        assert outcomes[:5] == [RolloutState.CANARY] * 5
        assert outcomes[-1] == RolloutState.PAUSED
        assert all(v["outcome"] == "extend" for v in view.verdicts)
        assert "too little data" in view.reason
        split = traffic.live_split(ws.store, "churn")
        assert split is not None and split.canary_weight_pct == 10.0

    def test_on_no_data_fail_rolls_back_at_once(
        self, ws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        set_policy(
            ws.store,
            "churn",
            TEST_POLICY.replace("on_no_data: extend", "on_no_data: fail"),
            actor="admin",
            clock=clock,
        )
        put_v1_in_production(ws, models, clock)
        rid = start_v2_canary(ws, models, clock)
        clock.advance(60)
        advance_rollouts(ws, clock)
        view = get_rollout(ws.store, rid)
        assert view.state == RolloutState.ROLLED_BACK and "no data" in view.reason

    def test_failing_staging_smoke_check_fails_the_rollout_without_moving_traffic(
        self, ws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        put_v1_in_production(ws, models, clock)
        set_policy(
            ws.store,
            "churn",
            TEST_POLICY.replace("max_latency_ms: 5000", "max_latency_ms: 0.000001"),
            actor="admin",
            clock=clock,
        )
        r = start_rollout(ws.store, "churn", 2, actor="dave", author="dave", clock=clock)
        approve(ws.store, r.id, actor="alice", clock=clock)
        advance_rollouts(ws, clock)
        view = get_rollout(ws.store, r.id)
        assert view.state == RolloutState.FAILED
        assert audit_trail(ws.store, r.id)[-1].detail["smoke"]["meets_latency"] is False
        assert traffic.live_split(ws.store, "churn").weights == {1: 100.0}  # type: ignore[union-attr]


class TestNoDoubleActions:
    def test_a_decision_made_on_a_stale_view_is_not_applied(
        self, ws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        """Two daemons looking at once: the second commits nothing."""
        rng = np.random.default_rng(6)
        put_v1_in_production(ws, models, clock)
        rid = start_v2_canary(ws, models, clock)
        serve_interval(ws, clock, rng)
        a, b = engine_for(ws, clock), engine_for(ws, clock)
        seen = a.snapshot(rid)
        assert b.advance(rid) is not None  # b judges the interval first
        assert a.decide(seen) is None  # a's decision was made on what b already changed
        assert len(get_rollout(ws.store, rid).verdicts) == 1


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
            if get_rollout(ws.store, rid).state != RolloutState.CANARY:
                break
        return rid

    def _report(self, ws: Workspace, rid: str) -> dict[str, object]:
        with ws.store.session() as s:
            row = s.scalars(select(Diagnosis).where(Diagnosis.rollout_id == rid)).one()
            return dict(row.report)

    def test_the_canary_traffic_is_reverted_and_committed_before_the_diagnosis_runs(
        self, ws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        other = Store(ws.store.url)  # another connection: it sees only what was committed
        seen: list[tuple[object, ...]] = []

        class Watching(Diagnoser):
            def complete(self, diagnosis_id: int) -> dict[str, object] | None:
                with other.session() as s:
                    status = s.get(Diagnosis, diagnosis_id).report["status"]  # type: ignore[union-attr]
                split = traffic.live_split(other, "churn")
                seen.append((split.weights if split else None, status))
                return super().complete(diagnosis_id)

        try:
            rid = self._fail_canary(ws, models, clock, Watching(ws.store, ws.artifacts, models))
            assert get_rollout(other, rid).state == RolloutState.ROLLED_BACK
        finally:
            other.dispose()
        assert seen == [({1: 100.0}, "pending")]
        report = self._report(ws, rid)
        assert report["status"] == "complete"
        assert report["failed_metrics"][0]["metric"] == "error_rate"  # type: ignore[index]
        assert report["drifting_inputs"]["why"] != "the diagnosis is still running"  # type: ignore[index]

    def test_a_crash_between_revert_and_diagnosis_is_diagnosed_on_the_next_pass(
        self, ws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        class Dying(Diagnoser):
            def complete(self, diagnosis_id: int) -> dict[str, object] | None:
                raise Crash

        with pytest.raises(Crash):
            self._fail_canary(ws, models, clock, Dying(ws.store, ws.artifacts, models))
        [rid] = [r.id for r in rollouts_of(ws.store, "churn") if r.version == 2]
        assert get_rollout(ws.store, rid).state == RolloutState.ROLLED_BACK
        assert traffic.live_split(ws.store, "churn").weights == {1: 100.0}  # type: ignore[union-attr]
        assert self._report(ws, rid)["status"] == "pending"

        advance_rollouts(ws, clock)  # the next daemon's first pass
        report = self._report(ws, rid)
        assert report["status"] == "complete"
        assert report["failed_metrics"][0]["metric"] == "error_rate"  # type: ignore[index]
        assert report["disagreements"]["why"] != "the diagnosis is still running"  # type: ignore[index]
        advance_rollouts(ws, clock)
        assert self._report(ws, rid) == report  # completed once
