"""The shadow stage: after the stable version answers live requests on a real model server, the
candidate answers copies of them, and the pairs are judged with the replay's paired tests on the
release's one error budget. A candidate that passes moves on to the canary steps; a skewed one
is rolled back at shadow having answered no user."""

from __future__ import annotations

import httpx
import pytest
import typer
from deploy_testkit import training_frame
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from server_testkit import serving, until
from shipyard.cli.deploy import register
from shipyard.clock import FakeClock
from shipyard.deploy.diagnosis import diagnosis_of
from shipyard.deploy.loop import advance_rollouts
from shipyard.deploy.policy import SHADOW_STEP, parse_policy, set_policy
from shipyard.deploy.rollout import (
    audit_trail,
    get_rollout,
    pause,
    progress_of,
    resume,
    start_rollout,
)
from shipyard.deploy.runbook import render_runbook
from shipyard.registry import Registry
from shipyard.serving import records
from shipyard.serving.server import build_app
from shipyard.serving.split import live_split
from shipyard.stats.canary import staged_alpha
from shipyard.statuses import RolloutState
from shipyard.workspace import Workspace

SHADOW = """
approvals: {start: {count: 0}, speedup: {count: 0}}
staging: {smoke: true, sample_rows: 3, max_latency_ms: 5000}
canary:
  interval_s: 60
  shadow: {share_pct: 100, min_rows: 100, max_wait_s: 600}
  steps:
    - {weight_pct: 10, min_duration_s: 120, min_samples: 100}
    - {weight_pct: 50, min_duration_s: 120, min_samples: 100}
analysis: {alpha: 0.01}
"""
REQUESTS = 120


def skewed() -> LogisticRegression:
    """A model that passed some gate but answers the live inputs the other way round."""
    x, y = training_frame()
    return LogisticRegression().fit(x, 1 - y)


@pytest.fixture
def stable_v1(ws: Workspace, models: Registry, clock: FakeClock) -> Registry:
    """churn v1 in production under the shadow policy, v2 a near-twin, v3 skewed."""
    set_policy(ws.store, "churn", SHADOW, actor="admin", clock=clock)
    Registry(ws.store, ws.artifacts, clock, "erin").register(
        "churn", skewed(), training_data=training_frame()[0]
    )
    first = start_rollout(ws.store, "churn", 1, actor="carol", clock=clock)
    advance_rollouts(ws, clock)
    assert get_rollout(ws.store, first.id).state == RolloutState.PRODUCTION
    return models


def shadowed_traffic(ws: Workspace, clock: FakeClock, candidate: int) -> set[str]:
    """``REQUESTS`` users answered by a real model server while ``candidate`` shadows; returns
    the versions that answered them, once the shadow log holds every copy."""
    clock.advance(1)  # the shadow log's files are written after the stage began
    rows = training_frame(seed=7)[0].to_numpy()[:REQUESTS]
    app = build_app(ws, monitoring=False, refresh_interval_s=0.1)
    app.shadow.flush_interval_s = 0.1
    answered = set()
    with serving(app, lifespan="on") as url, httpx.Client(base_url=url, timeout=5) as client:
        until(lambda: app.live.routes["churn"].shadow is not None, "the shadow", timeout_s=10)
        for i, row in enumerate(rows):
            body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64",
                                "data": [row.tolist()]}]}  # fmt: skip
            r = client.post("/v2/models/churn/infer", json=body, headers={"x-user-id": f"u{i}"})
            assert r.status_code == 200, r.text
            answered.add(r.headers["x-shipyard-model-version"])

        def logged() -> bool:
            with ws.store.session(readonly=True) as s:
                pairs = records.shadow_pairs(s, ws.artifacts, "churn", candidate, 1, 0.0)
            return pairs.requests == REQUESTS

        until(logged, "every copy in the shadow log", timeout_s=30)  # an idle-priority helper
    clock.advance(1)
    return answered


def test_a_shadow_that_passes_moves_on_to_the_canary_steps(
    ws: Workspace, stable_v1: Registry, clock: FakeClock
) -> None:
    r = start_rollout(ws.store, "churn", 2, actor="dave", clock=clock)
    advance_rollouts(ws, clock)
    view = get_rollout(ws.store, r.id)
    assert (view.state, view.step_index) == (RolloutState.STAGING, SHADOW_STEP)
    split = live_split(ws.store, "churn")
    assert split is not None and (split.stable, split.canary, split.shadow) == (1, None, 2)
    stages = progress_of(ws.store, r.id, clock.time())["stages"]
    assert [(s["kind"], s["status"]) for s in stages[:1]] == [("shadow", "current")]
    advance_rollouts(ws, clock)  # no rows yet: the stage waits
    assert get_rollout(ws.store, r.id).state == RolloutState.STAGING

    assert shadowed_traffic(ws, clock, 2) == {"1"}
    advance_rollouts(ws, clock)
    view = get_rollout(ws.store, r.id)
    assert view.state == RolloutState.CANARY and view.step_index == 0
    shadowed = view.verdicts[0]
    assert (shadowed["step"], shadowed["stage"], shadowed["outcome"]) == (
        SHADOW_STEP,
        "shadow",
        "pass",
    )
    judged = {m["metric"]: m for m in shadowed["metrics"]}
    assert judged["prediction_shift"]["test"] == "changed_answers"
    assert judged["prediction_shift"]["n_canary"] == REQUESTS
    assert judged["error_rate"]["test"] == "mcnemar_exact"
    events = {e.action: e for e in audit_trail(ws.store, r.id)}
    assert events["rollout.shadow.passed"].detail["shadow"]["rows"] == REQUESTS
    assert events["rollout.shadow.passed"].detail["stage"]["kind"] == "shadow"
    split = live_split(ws.store, "churn")
    assert split is not None and (split.canary, split.shadow) == (2, None)
    stages = progress_of(ws.store, r.id, clock.time())["stages"]
    assert [(s["kind"], s["status"]) for s in stages] == [
        ("shadow", "passed"),
        ("canary", "current"),
        ("canary", "pending"),
    ]
    assert sum(s["alpha"] for s in stages) == pytest.approx(0.01)


def test_a_skewed_candidate_is_rolled_back_at_shadow_having_answered_no_user(
    ws: Workspace,
    stable_v1: Registry,
    clock: FakeClock,
    migrated_db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = start_rollout(ws.store, "churn", 3, actor="erin", clock=clock)
    advance_rollouts(ws, clock)
    assert shadowed_traffic(ws, clock, 3) == {"1"}  # every user answered by the stable version
    advance_rollouts(ws, clock)
    view = get_rollout(ws.store, r.id)
    assert view.state == RolloutState.ROLLED_BACK
    assert view.reason == "shadow failed: prediction_shift"
    with ws.store.session() as s:
        report = diagnosis_of(s, r.id)
        assert not records.windows(s, "churn", 3, 0.0)  # no server answered a user with v3
    assert report is not None and report["stage"] == "shadow"
    assert report["disagreements"]["share"] > 0.8
    split = live_split(ws.store, "churn")
    assert split is not None and (split.stable, split.canary, split.shadow) == (1, None, None)
    stages = progress_of(ws.store, r.id, clock.time())["stages"]
    assert [s["status"] for s in stages] == ["failed", "pending", "pending"]
    rolled = next(e for e in audit_trail(ws.store, r.id) if e.action == "rollout.rolled_back")
    assert rolled.detail["shadow"]["users_served"] == 0
    monkeypatch.setenv("SHIPYARD_DB_URL", migrated_db_url)  # the CLI on the same store
    cli = typer.Typer()
    register(cli)
    shown = CliRunner().invoke(cli, ["rollout", "status", r.id], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert any("shadow" in ln and "failed" in ln for ln in shown.output.splitlines())


def test_too_few_shadowed_rows_after_the_longest_wait_end_the_rollout_failed(
    ws: Workspace, stable_v1: Registry, clock: FakeClock
) -> None:
    r = start_rollout(ws.store, "churn", 2, actor="dave", clock=clock)
    advance_rollouts(ws, clock)
    clock.advance(601)
    advance_rollouts(ws, clock)
    view = get_rollout(ws.store, r.id)
    assert view.state == RolloutState.FAILED
    assert "holds 0 row(s) after 600 s" in view.reason and "min_rows" in view.reason
    split = live_split(ws.store, "churn")
    assert split is not None and split.shadow is None  # the shadow stopped


def test_pausing_the_shadow_stage_stops_shadowing_and_resuming_starts_it_again(
    ws: Workspace, stable_v1: Registry, clock: FakeClock
) -> None:
    r = start_rollout(ws.store, "churn", 2, actor="dave", clock=clock)
    advance_rollouts(ws, clock)
    app = build_app(ws, monitoring=False, refresh_interval_s=0.1)
    rows = training_frame(seed=7)[0].to_numpy()

    def copied() -> float:
        return sum(
            app.telemetry.registry.get_sample_value(
                "shipyard_http_shadow_copies_total",
                {"model": "churn", "version": "2", "outcome": outcome},
            )
            or 0.0
            for outcome in ("answered", "failed", "dropped")
        )

    def shadow_routed() -> bool:
        route = app.live.routes.get("churn")
        return route is not None and route.shadow is not None

    with serving(app, lifespan="on") as url, httpx.Client(base_url=url, timeout=5) as client:

        def ask(n: int) -> None:
            for row in rows[:n]:
                body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64",
                                    "data": [row.tolist()]}]}  # fmt: skip
                got = client.post("/v2/models/churn/infer", json=body)
                assert got.status_code == 200 and got.headers["x-shipyard-model-version"] == "1"

        until(shadow_routed, "the shadow", timeout_s=10)
        pause(ws.store, r.id, actor="dave", clock=clock)
        split = live_split(ws.store, "churn")
        assert split is not None and (split.stable, split.canary, split.shadow) == (1, None, None)
        advance_rollouts(ws, clock)  # a paused rollout is left alone
        assert get_rollout(ws.store, r.id).state == RolloutState.PAUSED
        until(lambda: not shadow_routed(), "the server to stop shadowing", timeout_s=10)
        ask(5)

        resume(ws.store, r.id, actor="dave", clock=clock)
        view = get_rollout(ws.store, r.id)
        assert (view.state, view.step_index) == (RolloutState.STAGING, SHADOW_STEP)
        split = live_split(ws.store, "churn")
        assert split is not None and (split.stable, split.shadow) == (1, 2)
        until(shadow_routed, "the shadow again", timeout_s=10)
        ask(1)
        # copies go out in order: had a paused request been copied, it would count first
        until(lambda: copied() >= 1, "the copy made after the resume", timeout_s=30)
        assert copied() == 1


class TestBudget:
    def test_the_shadow_spends_the_share_after_the_replay_of_the_one_release_budget(self) -> None:
        policy = parse_policy(
            SHADOW.replace("  shadow:", "  replay: {min_rows: 100, max_rows: 300}\n  shadow:")
        )
        stages = policy.stages()
        assert [(s.kind, s.step) for s in stages] == [
            ("replay", None),
            ("shadow", None),
            ("canary", 0),
            ("canary", 1),
        ]
        assert sum(s.alpha for s in stages) == pytest.approx(0.01)
        looks = [1, 1, 2, 2]
        metrics = len(policy.analysis.metrics)
        assert policy.replay_alpha() == pytest.approx(staged_alpha(looks, 0, 1, 0.01) / metrics)
        assert policy.shadow_alpha() == pytest.approx(staged_alpha(looks, 1, 1, 0.01) / metrics)
        assert policy.alpha_at(0, 1) == pytest.approx(staged_alpha(looks, 2, 1, 0.01) / metrics)
        assert policy.stage_of_step(1).step == 1

    def test_a_policy_without_a_shadow_has_no_shadow_stage(self) -> None:
        policy = parse_policy(SHADOW.replace("  shadow: {share_pct: 100, min_rows: 100, "
                                             "max_wait_s: 600}\n", ""))  # fmt: skip
        assert not policy.shadows() and policy.shadow_alpha() == 0.0
        assert [s.kind for s in policy.stages()] == ["canary", "canary"]


def test_the_runbook_describes_the_shadow_stage() -> None:
    text = render_runbook("churn", parse_policy(SHADOW))
    assert "| 1 | nobody: answers copies of 100 % of live requests" in text
    assert "| 2 | 10 % |" in text
    assert "shipyard_http_shadow_copies_total" in text
