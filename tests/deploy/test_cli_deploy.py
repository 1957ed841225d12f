"""The deploy commands as a user types them (in-process Typer runner on the real workspace)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from deploy_testkit import TEST_POLICY, training_frame
from sklearn.linear_model import LogisticRegression
from sqlalchemy import func, select
from typer.testing import CliRunner

from shipyard.cli.deploy import register
from shipyard.deploy.loop import advance_rollouts
from shipyard.errors import DeployError, InvalidInput, NotFound
from shipyard.registry import Registry
from shipyard.store.deploy import DeployPolicyRecord
from shipyard.store.tables import AuditEvent
from shipyard.workspace import Workspace

app = typer.Typer()
register(app)
runner = CliRunner()


def run(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    ws = Workspace.open()
    x, y = training_frame()
    for author in ("carol", "dave"):
        Registry(ws.store, ws.artifacts, actor=author).register(
            "churn", LogisticRegression().fit(x, y), training_data=x
        )
    (tmp_path / "policy.yaml").write_text(TEST_POLICY)
    return ws


def test_deploy_approve_status_history_and_rollback(ws: Workspace, tmp_path: Path) -> None:
    run("deployments", "set-policy", "churn", str(tmp_path / "policy.yaml"))
    out = json.loads(run("deploy", "churn", "--version", "1", "--json"))
    rid = out["id"]
    assert out["state"] == "waiting_for_approvals" and out["author"] == "carol"
    with pytest.raises(DeployError, match="four-eyes"):
        run("approve", rid, "--as", "carol")
    assert "staging" in run("approve", rid, "--as", "alice")
    advance_rollouts(ws)
    status = json.loads(run("rollout", "status", rid, "--json"))
    assert status["state"] == "production"
    assert "production" in run("rollout", "status", rid)

    rid2 = json.loads(run("deploy", "churn", "--version", "2", "--json"))["id"]
    run("approve", rid2, "--as", "bob")
    advance_rollouts(ws)
    assert "canary weight 10" in run("rollout", "status", rid2)
    assert "paused" in run("rollout", "pause", rid2, "--as", "alice")
    assert "canary" in run("rollout", "resume", rid2, "--as", "alice")
    with pytest.raises(DeployError, match="speed-up approval"):
        run("rollout", "promote", rid2)
    out = run("rollback", "churn", "--as", "alice")
    assert "production 1 → 1" in out and rid2 in out
    hist = json.loads(run("deployments", "history", "churn", "--json"))
    assert [p["via"] for p in hist["production"]] == ["rollout", "rollback"]
    assert [r["state"] for r in hist["rollouts"]] == ["production", "rolled_back"]
    assert "rollback" in run("deployments", "history", "churn")


def test_bad_input_is_a_clear_error(ws: Workspace, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="churn/9"):
        run("deploy", "churn", "--version", "9")
    with pytest.raises(NotFound, match="no rollout named 'nope'"):
        run("rollout", "status", "nope")
    (tmp_path / "bad.yaml").write_text("canary: {steps: [{weight_pct: 0}]}")
    with pytest.raises(InvalidInput, match="weight_pct"):  # the caller's document: a 400
        run("deployments", "set-policy", "churn", str(tmp_path / "bad.yaml"))


def test_runbook_renders_the_policy_with_exact_commands(ws: Workspace, tmp_path: Path) -> None:
    default = run("runbook", "churn")
    assert "no deployment policy" in default
    run("deployments", "set-policy", "churn", str(tmp_path / "policy.yaml"))
    text = run("runbook", "churn")
    assert "members of approver (alice, bob)" in text
    assert "author of the version may not approve" in text
    assert "| 1 | 10 % | 2 min | 100 per version | 6 min |" in text
    assert "shipyard rollback churn --to-version V" in text
    assert "shipyard deploy churn --version V" in text
    run("runbook", "churn", "-o", str(tmp_path / "RUNBOOK.md"))
    assert (tmp_path / "RUNBOOK.md").read_text().rstrip() == text.rstrip()


def test_errors_reach_the_user_as_one_line_from_a_real_process(ws: Workspace) -> None:
    code = (
        "import sys; from shipyard.cli import app, main; from shipyard.cli.deploy import register;"
        "register(app); sys.argv = ['shipyard', 'rollback', 'churn']; main()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "no earlier production version" in out.stderr
    assert np.isfinite(1.0)


def test_a_misspelled_model_is_named_with_a_suggestion_not_judged(
    ws: Workspace, tmp_path: Path
) -> None:
    """`rollback chrun` said "no earlier production version"; set-policy stored a policy for it."""
    with ws.store.session(readonly=True) as s:
        audited = s.scalar(select(func.count()).select_from(AuditEvent))
    with pytest.raises(NotFound, match="'chrun'") as caught:
        run("rollback", "chrun")
    assert "did you mean 'churn'?" in str(caught.value)
    assert "earlier" not in str(caught.value)
    with pytest.raises(NotFound, match="did you mean 'churn'"):
        run("deployments", "set-policy", "chrun", str(tmp_path / "policy.yaml"))
    with pytest.raises(NotFound, match=r"^no model named 'nothing-like-it'"):
        run("deployments", "history", "nothing-like-it")
    with ws.store.session(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(DeployPolicyRecord)) == 0
        assert s.scalar(select(func.count()).select_from(AuditEvent)) == audited


@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n"])
def test_an_empty_policy_file_is_refused_and_changes_nothing(
    ws: Workspace, tmp_path: Path, content: str
) -> None:
    run("deployments", "set-policy", "churn", str(tmp_path / "policy.yaml"))
    before = run("deployments", "policy", "churn")
    (tmp_path / "empty.yaml").write_text(content)
    with pytest.raises(InvalidInput, match=r"empty\.yaml is empty; nothing was changed"):
        run("deployments", "set-policy", "churn", str(tmp_path / "empty.yaml"))
    assert run("deployments", "policy", "churn") == before
    (tmp_path / "defaults.yaml").write_text("{}\n")  # the defaults, said on purpose
    run("deployments", "set-policy", "churn", str(tmp_path / "defaults.yaml"))
    assert run("deployments", "policy", "churn") != before


def test_rollback_to_a_named_rolled_back_version_warns(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "fast.yaml").write_text("approvals: {start: {count: 0}}\ncanary: {steps: []}\n")
    run("deployments", "set-policy", "churn", str(tmp_path / "fast.yaml"))
    for version in ("1", "2"):
        run("deploy", "churn", "--version", version)
        advance_rollouts(ws)
    assert "production 2 → 1" in run("rollback", "churn")
    with pytest.raises(DeployError, match="no earlier production version that was healthy"):
        run("rollback", "churn")
    result = runner.invoke(app, ["rollback", "churn", "--version", "2"])
    assert result.exit_code == 0, result.output
    assert "warning: churn/2 was rolled back from production" in " ".join(result.output.split())
    assert "production 1 → 2" in result.output
