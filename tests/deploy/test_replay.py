"""The replay stage: before any user is routed to it, the candidate answers the rows the stable
version answered in its request log (written by the servers' real telemetry) and is judged
against the recorded answers with paired tests, on the release's one error budget. A candidate
that passes moves on to the canary steps; a skewed one is rolled back with a diagnosis having
answered no user (a real model server afterwards still serves only the stable version); a
policy that replays with no log to replay says so."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import typer
from deploy_testkit import training_frame
from sklearn.linear_model import LogisticRegression
from sqlalchemy import select
from typer.testing import CliRunner

from server_testkit import serving
from shipyard.cli.deploy import register
from shipyard.clock import FakeClock
from shipyard.deploy.diagnosis import diagnosis_of
from shipyard.deploy.loop import advance_rollouts
from shipyard.deploy.policy import REPLAY_STEP, parse_policy, set_policy
from shipyard.deploy.replay import ReplayArms, judge_replay
from shipyard.deploy.rollout import audit_trail, get_rollout, progress_of, start_rollout
from shipyard.deploy.runbook import render_runbook
from shipyard.errors import ConfigError, DeployError
from shipyard.registry import Registry
from shipyard.serving import records
from shipyard.serving.server import build_app
from shipyard.serving.split import live_split
from shipyard.serving.telemetry import Telemetry
from shipyard.stats.canary import staged_alpha
from shipyard.statuses import RolloutState
from shipyard.store.tables import MetricPoint
from shipyard.workspace import Workspace

REPLAY = """
approvals: {start: {count: 0}, speedup: {count: 0}}
staging: {smoke: true, sample_rows: 3, max_latency_ms: 5000}
canary:
  interval_s: 60
  replay: {min_rows: 100, max_rows: 300}
  steps:
    - {weight_pct: 10, min_duration_s: 120, min_samples: 100}
    - {weight_pct: 50, min_duration_s: 120, min_samples: 100}
analysis: {alpha: 0.01}
"""


def skewed() -> LogisticRegression:
    """A model that passed some gate but answers the live inputs the other way round."""
    x, y = training_frame()
    return LogisticRegression().fit(x, 1 - y)


def log_stable_requests(ws: Workspace, clock: FakeClock, version: int, rows: int) -> None:
    """``rows`` logged rows of ``version`` (10 a request), answered by the version itself and
    flushed by the servers' own telemetry, every request sampled."""
    registry = Registry.of(ws)
    info, model = registry.load("churn", version=version)
    telemetry = Telemetry(ws.store, ws.artifacts, sample_rate=1.0, clock=clock, worker="w")
    x = training_frame(seed=7)[0].to_numpy()[:rows]
    for i in range(0, len(x), 10):
        batch = x[i : i + 10]
        telemetry.ok(info, batch, np.asarray(model.predict(batch)), None, 0.002, f"r{i}")
    clock.advance(10)
    telemetry.flush()


@pytest.fixture
def stable_v1(ws: Workspace, models: Registry, clock: FakeClock) -> Registry:
    """churn v1 in production under the replay policy (nothing to replay against for a first
    version), v2 a near-twin, v3 skewed."""
    set_policy(ws.store, "churn", REPLAY, actor="admin", clock=clock)
    Registry(ws.store, ws.artifacts, clock, "erin").register(
        "churn", skewed(), training_data=training_frame()[0]
    )
    first = start_rollout(ws.store, "churn", 1, actor="carol", clock=clock)
    advance_rollouts(ws, clock)
    assert get_rollout(ws.store, first.id).state == RolloutState.PRODUCTION
    return models


def test_a_replay_that_passes_moves_on_to_the_canary_steps(
    ws: Workspace, stable_v1: Registry, clock: FakeClock
) -> None:
    log_stable_requests(ws, clock, 1, 300)
    r = start_rollout(ws.store, "churn", 2, actor="dave", clock=clock)
    clock.advance(1)
    advance_rollouts(ws, clock)
    view = get_rollout(ws.store, r.id)
    assert view.state == RolloutState.CANARY and view.step_index == 0
    replayed = view.verdicts[0]
    assert (replayed["step"], replayed["stage"], replayed["outcome"]) == (
        REPLAY_STEP,
        "replay",
        "pass",
    )
    judged = {m["metric"]: m for m in replayed["metrics"]}
    assert judged["prediction_shift"]["test"] == "changed_answers"
    assert judged["prediction_shift"]["n_canary"] == 300
    assert judged["error_rate"]["test"] == "mcnemar_exact"
    assert judged["latency"]["test"] == "paired_signed_rank"
    events = {e.action: e for e in audit_trail(ws.store, r.id)}
    assert events["rollout.replay.passed"].detail["replay"]["rows"] == 300
    assert events["rollout.replay.passed"].detail["stage"]["kind"] == "replay"
    assert events["rollout.canary"].detail["stage"]["kind"] == "canary"
    stages = progress_of(ws.store, r.id, clock.time())["stages"]
    assert [(s["kind"], s["status"]) for s in stages] == [
        ("replay", "passed"),
        ("canary", "current"),
        ("canary", "pending"),
    ]
    assert sum(s["alpha"] for s in stages) == pytest.approx(0.01)


def test_a_skewed_candidate_is_rolled_back_at_replay_having_answered_no_user(
    ws: Workspace,
    stable_v1: Registry,
    clock: FakeClock,
    migrated_db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log_stable_requests(ws, clock, 1, 300)
    r = start_rollout(ws.store, "churn", 3, actor="erin", clock=clock)
    clock.advance(1)
    advance_rollouts(ws, clock)
    view = get_rollout(ws.store, r.id)
    assert view.state == RolloutState.ROLLED_BACK
    assert view.reason == "replay failed: prediction_shift"
    report = diagnosis_of_rollout(ws, r.id)
    assert report["status"] == "complete" and report["stage"] == "replay"
    assert report["disagreements"]["share"] > 0.8
    assert report["disagreements"]["examples"]
    assert report["replay"]["users_served"] == 0
    with ws.store.session() as s:
        assert not records.windows(s, "churn", 3, 0.0)  # no server ever answered with v3
        failed = s.scalars(select(MetricPoint).where(MetricPoint.name == "shipyard_rollout_failed"))
        assert [p.labels["rollout"] for p in failed] == [r.id]  # the CanaryFailed alert's series
    split = live_split(ws.store, "churn")
    assert split is None or split.canary is None  # traffic never moved
    stages = progress_of(ws.store, r.id, clock.time())["stages"]
    assert [s["status"] for s in stages] == ["failed", "pending", "pending"]
    rolled = next(e for e in audit_trail(ws.store, r.id) if e.action == "rollout.rolled_back")
    assert rolled.detail["replay"]["changed_share"] > 0.8
    monkeypatch.setenv("SHIPYARD_DB_URL", migrated_db_url)  # the CLI on the same store
    cli = typer.Typer()
    register(cli)
    shown = CliRunner().invoke(cli, ["rollout", "status", r.id], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert any("replay" in ln and "failed" in ln for ln in shown.output.splitlines())
    app = build_app(ws, monitoring=False, refresh_interval_s=0.5)
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64",
                        "data": training_frame()[0].to_numpy()[:1].tolist()}]}  # fmt: skip
    with serving(app, lifespan="on") as url, httpx.Client(base_url=url, timeout=5) as client:
        answered = {
            client.post(
                "/v2/models/churn/infer", json=body, headers={"x-user-id": f"u{i}"}
            ).headers["x-shipyard-model-version"]
            for i in range(200)
        }
    assert answered == {"1"}


def diagnosis_of_rollout(ws: Workspace, rollout_id: str) -> dict[str, object]:
    with ws.store.session() as s:
        report = diagnosis_of(s, rollout_id)
    assert report is not None
    return report


def test_a_policy_that_replays_with_no_log_refuses_to_start_with_a_clear_error(
    ws: Workspace, stable_v1: Registry, clock: FakeClock
) -> None:
    with pytest.raises(DeployError, match=r"churn/1 has no request log .*canary\.replay"):
        start_rollout(ws.store, "churn", 2, actor="dave", clock=clock)


def test_a_log_too_thin_to_replay_ends_the_rollout_failed_with_the_reason(
    ws: Workspace, stable_v1: Registry, clock: FakeClock
) -> None:
    log_stable_requests(ws, clock, 1, 20)
    r = start_rollout(ws.store, "churn", 2, actor="dave", clock=clock)
    advance_rollouts(ws, clock)
    view = get_rollout(ws.store, r.id)
    assert view.state == RolloutState.FAILED
    assert "holds 20 answered row(s)" in view.reason and "min_rows" in view.reason
    assert live_split(ws.store, "churn") is None or live_split(ws.store, "churn").canary is None


class TestBudget:
    def test_the_replay_spends_the_first_share_of_the_one_release_budget(self) -> None:
        policy = parse_policy(REPLAY)
        without = parse_policy(REPLAY.replace("  replay: {min_rows: 100, max_rows: 300}\n", ""))
        stages = policy.stages()
        assert [(s.kind, s.step) for s in stages] == [
            ("replay", None),
            ("canary", 0),
            ("canary", 1),
        ]
        assert sum(s.alpha for s in stages) == pytest.approx(0.01)
        looks = [1, 2, 2]  # the replay's one look, then 120 s / 60 s per step
        metrics = len(policy.analysis.metrics)
        assert policy.replay_alpha() == pytest.approx(staged_alpha(looks, 0, 1, 0.01) / metrics)
        assert policy.alpha_at(0, 1) == pytest.approx(staged_alpha(looks, 1, 1, 0.01) / metrics)
        assert policy.alpha_at(0, 1) < without.alpha_at(0, 1)  # the steps share with the replay
        assert without.replay_alpha() == 0.0

    def test_per_stage_budget_counts_the_replay_as_a_stage(self) -> None:
        policy = parse_policy(REPLAY.replace("{alpha: 0.01}", "{alpha: 0.01, budget: per_stage}"))
        stages = policy.stages()
        assert sum(s.alpha for s in stages) <= 0.01 + 1e-12
        assert stages[0].alpha == pytest.approx(0.01 / 3)

    def test_the_judge_fails_a_candidate_that_errs_on_the_same_rows(self) -> None:
        recorded = [0, 1] * 100
        answers: list[object] = [None] * 20 + recorded[20:]
        arms = ReplayArms(recorded=recorded, answers=answers, errors=["boom"] * 20)
        verdicts = {v.metric: v for v in judge_replay(arms, parse_policy(REPLAY))}
        assert verdicts["error_rate"].outcome == "fail"
        assert verdicts["prediction_shift"].outcome == "pass"  # what it answered, it answered right
        assert verdicts["latency_spread"].outcome == "pass"
        assert "not judged at replay" in verdicts["latency_spread"].reason

    def test_a_regressor_is_judged_on_its_paired_changes_in_stable_standard_deviations(
        self,
    ) -> None:
        recorded = list(np.linspace(0.0, 10.0, 200))  # σ ≈ 2.9
        policy = parse_policy(REPLAY)
        close = ReplayArms(recorded=recorded, answers=[v + 0.01 for v in recorded])
        shifted = ReplayArms(recorded=recorded, answers=[v + 1.5 for v in recorded])
        judged = {v.metric: v for v in judge_replay(close, policy)}["prediction_shift"]
        assert (judged.test, judged.outcome) == ("paired_abs_change", "pass")
        judged = {v.metric: v for v in judge_replay(shifted, policy)}["prediction_shift"]
        assert judged.outcome == "fail" and judged.effect == pytest.approx(1.5 / np.std(recorded))

    def test_a_policy_whose_replay_takes_fewer_rows_than_it_needs_is_refused(self) -> None:
        with pytest.raises(ConfigError, match="max_rows must be ≥ min_rows"):
            parse_policy(REPLAY.replace("max_rows: 300", "max_rows: 50"))


def test_the_runbook_describes_the_replay_stage() -> None:
    text = render_runbook("churn", parse_policy(REPLAY))
    assert "| 1 | nobody: replays the stable version's logged requests |" in text
    assert "| 2 | 10 % |" in text
    assert "no user was ever served by it" in text
