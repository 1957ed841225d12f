"""A release's stages: a targeted step serves only the users its header or cookie match selects
(a real model server on loopback), the weighted steps that follow keep them; each rollout draws
its canary cohort afresh and can keep recent canary users out; policy, status, runbook and the
audit name the stages."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import typer
from deploy_testkit import classifier, training_frame
from typer.testing import CliRunner

from server_testkit import serving
from shipyard.cli.deploy import register
from shipyard.deploy.loop import advance_rollouts
from shipyard.deploy.policy import parse_policy, set_policy
from shipyard.deploy.rollout import (
    abort,
    audit_trail,
    get_rollout,
    progress_of,
    promote,
    start_rollout,
)
from shipyard.deploy.runbook import render_runbook
from shipyard.errors import ConfigError
from shipyard.registry import Registry
from shipyard.serving.routing import choose_version, routing_key
from shipyard.serving.server import build_app
from shipyard.serving.split import live_split
from shipyard.statuses import RolloutState
from shipyard.workspace import Workspace

TARGETED = """
approvals: {start: {count: 0}, speedup: {count: 0}}
staging: {smoke: false}
canary:
  interval_s: 60
  exclude_recent_days: 14
  steps:
    - {match: {header: X-User-Group, values: [internal]}, min_duration_s: 600, min_samples: 10}
    - {match: {cookie: beta, values: ["1"]}, min_duration_s: 600, min_samples: 10}
    - {weight_pct: 10, min_duration_s: 600, min_samples: 100}
"""
USERS = [f"u{i}" for i in range(120)]


@dataclass
class Served:
    ws: Workspace
    client: httpx.Client
    body: dict[str, object]
    rollout: str

    def version_for(self, user: str, **headers: str) -> int:
        sent = {"x-user-id": user, **{k.replace("_", "-"): v for k, v in headers.items()}}
        r = self.client.post("/v2/models/churn/infer", json=self.body, headers=sent)
        assert r.status_code == 200, r.text
        return int(r.headers["x-shipyard-model-version"])


def _two_versions(ws: Workspace, policy: str = TARGETED) -> None:
    x, _ = training_frame()
    for author, c in (("carol", 1.0), ("dave", 0.5)):
        Registry(ws.store, ws.artifacts, ws.clock, author).register(
            "churn", classifier(c), training_data=x
        )
    set_policy(ws.store, "churn", policy, actor="admin", clock=ws.clock)
    first = start_rollout(ws.store, "churn", 1, actor="carol", clock=ws.clock)
    advance_rollouts(ws)
    assert get_rollout(ws.store, first.id).state == RolloutState.PRODUCTION


@pytest.fixture
def served(workspace: Workspace) -> Iterator[Served]:
    """churn v1 in production, v2 in its first stage (targeted: header X-User-Group internal),
    on SQLite (the store's part runs on both backends in the cohort test below)."""
    ws = workspace
    _two_versions(ws)
    rollout = start_rollout(ws.store, "churn", 2, actor="dave", clock=ws.clock).id
    advance_rollouts(ws)
    assert get_rollout(ws.store, rollout).state == RolloutState.CANARY
    app = build_app(ws, monitoring=False, refresh_interval_s=0.1)
    x, _ = training_frame()
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64",
                        "data": x.to_numpy()[:1].tolist()}]}  # fmt: skip
    with serving(app, lifespan="on") as url, httpx.Client(base_url=url, timeout=5) as client:
        yield Served(ws, client, body, rollout)


def _promote_and_wait(s: Served, probe: dict[str, str]) -> None:
    promote(s.ws.store, s.rollout, actor="ops", clock=s.ws.clock)
    for _ in range(100):  # the server refreshes every 0.1 s
        if s.version_for("probe", **probe) == 2:
            return
    raise AssertionError(f"the server never routed {probe} to the canary")


def test_a_targeted_step_serves_only_the_matching_users_and_keeps_them_later(
    served: Served,
) -> None:
    for _ in range(100):
        if served.version_for("u0", x_user_group="internal") == 2:
            break
    internal = {served.version_for(u, x_user_group="internal") for u in USERS[:40]}
    others = {served.version_for(u) for u in USERS} | {
        served.version_for(u, x_user_group="external") for u in USERS[:40]
    }
    assert (internal, others) == ({2}, {1})  # only the matching users, every one of them

    _promote_and_wait(served, {"cookie": "beta=1"})  # stage 2: beta cookie, internal kept
    assert {served.version_for(u, cookie="theme=dark; beta=1") for u in USERS[:20]} == {2}
    assert {served.version_for(u, x_user_group="internal") for u in USERS[:20]} == {2}
    assert {served.version_for(u, cookie="beta=0") for u in USERS[:40]} == {1}

    promote(served.ws.store, served.rollout, actor="ops", clock=served.ws.clock)  # 10 %
    split = live_split(served.ws.store, "churn")
    assert split is not None and split.canary_weight_pct == 10
    expect = {u: choose_version(routing_key({"x-user-id": u}, "-"), split.weights, 2, split.cohort)
              for u in USERS}  # fmt: skip
    newcomer = next(u for u, v in expect.items() if v == 2)
    for _ in range(100):
        if served.version_for(newcomer) == 2:
            break
    assert {u: served.version_for(u) for u in USERS} == expect
    assert 0 < sum(v == 2 for v in expect.values()) < len(USERS) / 4
    assert {served.version_for(u, x_user_group="internal") for u in USERS[:20]} == {2}


def test_each_rollout_draws_a_fresh_cohort_and_keeps_recent_canary_users_out(
    ws: Workspace,
) -> None:
    weighted = (
        "approvals: {start: {count: 0}}\nstaging: {smoke: false}\n"
        "canary:\n  steps: [{weight_pct: 20}]\n"
    )
    _two_versions(ws, weighted)
    keys = [f"user:{i}" for i in range(4000)]

    def canary_of_a_rollout() -> set[str]:
        r = start_rollout(ws.store, "churn", 2, actor="dave", clock=ws.clock)
        advance_rollouts(ws)
        split = live_split(ws.store, "churn")
        assert split is not None and split.rollout_id == r.id and split.cohort is not None
        abort(ws.store, r.id, actor="ops", clock=ws.clock)
        ws.clock.advance(3600)
        return {k for k in keys if choose_version(k, split.weights, 2, split.cohort) == 2}

    first, second = canary_of_a_rollout(), canary_of_a_rollout()
    assert 0.15 < len(first) / len(keys) < 0.25
    assert 0.02 < len(first & second) / len(keys) < 0.06  # ≈ 20 % × 20 %, not 20 %
    set_policy(
        ws.store, "churn", weighted + "  exclude_recent_days: 1\n", actor="a", clock=ws.clock
    )
    third = canary_of_a_rollout()
    assert not third & (first | second)  # both earlier canaries are kept out
    assert 0.15 < len(third) / len(keys) < 0.25  # and the canary keeps its share
    ws.clock.advance(22.5 * 3600)  # the first two ended more than a day ago, the third not
    fourth = canary_of_a_rollout()
    assert not fourth & third
    assert fourth & (first | second)  # their users may come back


def test_status_runbook_and_audit_name_the_stages(served: Served) -> None:
    progress = progress_of(served.ws.store, served.rollout, served.ws.clock.time())
    stages = progress["stages"]
    assert [(s["kind"], s["status"]) for s in stages] == [
        ("targeted", "current"),
        ("targeted", "pending"),
        ("canary", "pending"),
    ]
    assert stages[0]["description"] == "targeted: header X-User-Group in [internal]"
    assert sum(s["alpha"] for s in stages) == pytest.approx(0.01)  # one budget for the release
    assert "header X-User-Group in [internal]" in progress["waits_for"][0]
    events = audit_trail(served.ws.store, served.rollout)
    start = next(e for e in events if e.action == "rollout.start")
    assert [s["kind"] for s in start.detail["stages"]] == ["targeted", "targeted", "canary"]
    entered = next(e for e in events if e.action == "rollout.canary")
    assert entered.detail["stage"]["kind"] == "targeted"
    assert entered.detail["cohort"]["targets"] == ["header X-User-Group in [internal]"]
    text = render_runbook("churn", parse_policy(TARGETED))
    assert "| 1 | header X-User-Group in [internal] | 10 min | 10 per version |" in text
    assert "| 3 | 10 % | 10 min | 100 per version | 30 min | canary |" in text
    assert "one α = 0.01 for the whole release" in text
    assert "last 14 days are kept out" in text
    cli = typer.Typer()
    register(cli)
    shown = CliRunner().invoke(cli, ["rollout", "status", served.rollout], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    lines = [line for line in shown.output.splitlines() if "targeted" in line]
    assert any("header X-User-Group in [internal]" in ln and "current" in ln for ln in lines)
    assert any("cookie beta in [1]" in ln and "pending" in ln for ln in lines)


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ("[{weight_pct: 10}, {match: {header: x-a, values: [b]}}]", "go before every weighted"),
        ("[{match: {header: x-a, cookie: c, values: [b]}}]", "exactly one of header or cookie"),
        ("[{match: {header: x-a, values: [b]}, weight_pct: 5}]", "takes no weight_pct"),
        ("[{match: {header: 'x a', values: [b]}}]", "HTTP token"),
        ("[{match: {header: x-user-id, values: [b]}}]", "routes by weight"),
        ("[{match: {cookie: beta, values: []}}]", "values"),
        ("[{}]", "weight_pct > 0, or a match"),
        ("[{match: {cookie: b, values: ['1']}}, {match: {cookie: b, values: ['1']}}]", "same"),
    ],
)
def test_a_malformed_targeted_step_gets_a_clear_error(steps: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_policy(f"canary: {{steps: {steps}}}")
