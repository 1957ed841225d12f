"""Commands that depend on the control loop say so when no daemon holds the leader lease
(issue #19: a rollout sat in staging, "why: 1 of 1 approvals to start", until a daemon ran)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from deploy_testkit import TEST_POLICY, training_frame
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from shipyard.cli.deploy import register
from shipyard.daemon import NO_DAEMON, acquire_leadership, release_leadership
from shipyard.deploy.loop import advance_rollouts
from shipyard.registry import Registry
from shipyard.workspace import Workspace

app = typer.Typer()
register(app)


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_deploy_approve_and_status_say_when_no_daemon_runs(tmp_path: Path) -> None:
    ws = Workspace.open()
    x, y = training_frame()
    for author in ("carol", "dave"):
        Registry(ws.store, ws.artifacts, actor=author).register(
            "churn", LogisticRegression().fit(x, y), training_data=x
        )
    (tmp_path / "policy.yaml").write_text(TEST_POLICY)
    run("deployments", "set-policy", "churn", str(tmp_path / "policy.yaml"))

    out = run("deploy", "churn", "--version", "1")
    assert NO_DAEMON in out
    rid = out.split("rollout ", 1)[1].split(":", 1)[0]
    assert NO_DAEMON in run("rollout", "status", rid)

    assert acquire_leadership(ws.store, "a-daemon", 15, time.time())  # a daemon leads
    assert NO_DAEMON not in run("approve", rid, "--as", "alice")
    assert NO_DAEMON not in run("rollout", "status", rid)

    release_leadership(ws.store, "a-daemon", time.time())  # it stopped
    assert NO_DAEMON in run("rollout", "status", rid)
    advance_rollouts(ws)  # production: nothing waits for a daemon any more
    assert NO_DAEMON not in run("rollout", "status", rid)
    ws.store.dispose()
