"""``shipyard models validate``: the validation gate from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from deploy_testkit import TEST_POLICY, training_frame
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sqlalchemy import func, select
from typer.testing import CliRunner

from shipyard.cli.deploy import register as register_deploy
from shipyard.cli.models import models_app
from shipyard.deploy import rollouts_of, set_policy, start_rollout
from shipyard.errors import DeployError, InvalidInput
from shipyard.registry import Registry
from shipyard.store.deploy import GateResult
from shipyard.workspace import Workspace

app = typer.Typer()
app.add_typer(models_app, name="models")
register_deploy(app)
runner = CliRunner()
GATE = "gate: {required: true, minimum: {accuracy: 0.8}, no_regression: [accuracy]}\n"


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    ws = Workspace.open()
    x, y = training_frame()
    registry = Registry(ws.store, ws.artifacts, actor="carol")
    registry.register("churn", LogisticRegression().fit(x, y), training_data=x)
    registry.register("churn", DummyClassifier().fit(x, y), training_data=x)  # always one class
    set_policy(ws.store, "churn", TEST_POLICY + GATE, actor="ops")
    x_eval, y_eval = training_frame(seed=1)
    x_eval.assign(label=y_eval).to_parquet(tmp_path / "eval.parquet")
    return ws


def gate_rows(ws: Workspace) -> int:
    with ws.store.session() as s:
        return int(s.scalar(select(func.count()).select_from(GateResult)) or 0)


def test_a_good_version_is_blessed_and_can_start_its_rollout(ws: Workspace, tmp_path: Path) -> None:
    data = str(tmp_path / "eval.parquet")
    code, out = invoke("models", "validate", "churn", data, "--version", "1", "--label", "label")
    assert code == 0 and "✓ blessed churn v1" in out and "accuracy" in out
    code, out = invoke(
        "models", "validate", "churn", data, "-v", "1", "--label", "label", "--deploy", "--json"
    )
    doc = json.loads(out)
    assert code == 0 and doc["passed"] and doc["metrics"]["accuracy"] > 0.9
    assert doc["rollout"]["state"] == "waiting_for_approvals"
    assert "waiting for 1 approval(s) of approver to start" in doc["rollout"]["reason"]
    shown = invoke("models", "show", "churn", "-v", "1")[1]
    assert "gate      blessed" in shown and "on held-out data: accuracy 0.9" in shown
    assert [r.version for r in rollouts_of(ws.store, "churn")] == [1]


def test_a_worse_version_is_refused_and_cannot_be_deployed(ws: Workspace, tmp_path: Path) -> None:
    data = str(tmp_path / "eval.parquet")
    code, out = invoke(
        "models", "validate", "churn", data, "-v", "2", "--label", "label", "--deploy"
    )
    assert code == 3 and "not blessed" in out and "< minimum 0.8" in out
    assert rollouts_of(ws.store, "churn") == []
    with pytest.raises(DeployError, match="failed its validation gate"):
        start_rollout(ws.store, "churn", 2, actor="ops")
    assert "gate      not blessed" in invoke("models", "show", "churn", "-v", "2")[1]


def test_bad_input_is_refused_and_records_nothing(ws: Workspace, tmp_path: Path) -> None:
    data = str(tmp_path / "eval.parquet")
    with pytest.raises(InvalidInput, match="no column 'target'"):
        invoke("models", "validate", "churn", data, "-v", "1", "--label", "target")
    with pytest.raises(InvalidInput, match="does not exist"):
        invoke("models", "validate", "churn", str(tmp_path / "nope.csv"), "-v", "1", "--label", "y")
    assert gate_rows(ws) == 0
