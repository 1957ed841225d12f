"""The validation gate on real models and real evaluation data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from deploy_testkit import training_frame
from sklearn.dummy import DummyClassifier
from sqlalchemy import select

from shipyard.clock import FakeClock
from shipyard.deploy.gate import validate_version
from shipyard.deploy.policy import Gate
from shipyard.deploy.rollout import start_rollout
from shipyard.errors import DeployError, InvalidInput
from shipyard.registry import Registry
from shipyard.store.deploy import GateResult
from shipyard.store.tables import AuditEvent
from shipyard.workspace import Workspace


def test_a_better_version_passes_and_its_evidence_is_recorded(
    ws: Workspace, models: Registry, clock: FakeClock
) -> None:
    x, y = training_frame(seed=7)
    models.set_alias("churn", "champion", 1)
    gate = Gate(minimum={"accuracy": 0.8}, no_regression=["accuracy"], tolerance=0.02)
    out = validate_version(models, "churn", 2, x, y, actor="ci", gate=gate, clock=clock)
    assert out.passed, out.reasons
    assert out.serving_version == 1  # the registry's champion while nothing is in production
    expected = float(
        (models.load("churn", version=2)[1].predict(x[["a", "b"]].to_numpy()) == y).mean()
    )
    assert out.metrics["accuracy"] == pytest.approx(expected)
    with ws.store.session() as s:
        row = s.scalar(select(GateResult).where(GateResult.version == 2))
        audit = s.scalar(select(AuditEvent).where(AuditEvent.action == "gate.passed"))
    assert row is not None and row.passed == 1 and row.evidence["serving_metrics"]
    assert audit is not None and audit.subject_id == "churn/2"


def test_a_regressing_version_fails_and_cannot_be_deployed(
    ws: Workspace, models: Registry, clock: FakeClock
) -> None:
    x, y = training_frame(seed=8)
    models.set_alias("churn", "champion", 1)
    constant = DummyClassifier(strategy="most_frequent").fit(x, y)
    worse = Registry(ws.store, ws.artifacts, clock, "erin").register(
        "churn", constant, training_data=x
    )
    gate = Gate(minimum={"accuracy": 0.3}, no_regression=["accuracy"], tolerance=0.01)
    out = validate_version(models, "churn", worse.version, x, y, actor="ci", gate=gate, clock=clock)
    assert not out.passed
    assert any("accuracy regressed" in r for r in out.reasons)
    with pytest.raises(DeployError, match="failed its validation gate"):
        start_rollout(ws.store, "churn", worse.version, actor="erin", clock=clock)


def test_absolute_thresholds_apply_without_a_serving_version(
    ws: Workspace, models: Registry, clock: FakeClock
) -> None:
    x, y = training_frame(seed=9)
    gate = Gate(minimum={"accuracy": 0.999}, no_regression=[])
    out = validate_version(models, "churn", 1, x, y, actor="ci", gate=gate, clock=clock)
    assert not out.passed and "minimum 0.999" in out.reasons[0]


def test_unknown_metric_and_empty_data_are_clear_errors(
    ws: Workspace, models: Registry, clock: FakeClock
) -> None:
    x, y = training_frame()
    with pytest.raises(InvalidInput, match="unknown gate metric 'vibes'"):
        validate_version(models, "churn", 2, x, y, actor="ci", gate=Gate(minimum={"vibes": 1}))
    with pytest.raises(InvalidInput, match="empty"):
        validate_version(models, "churn", 2, x.iloc[:0], np.empty(0), actor="ci")
    with pytest.raises(InvalidInput, match="lacks columns"):
        validate_version(models, "churn", 2, pd.DataFrame({"a": [1.0]}), np.array([1]), actor="ci")


def test_a_blessed_version_starts_its_rollout_by_itself(
    ws: Workspace, models: Registry, clock: FakeClock
) -> None:
    """The automated path: register → validate → deploy; the rollout still waits for approval."""
    from shipyard.deploy import validate_and_deploy

    x, y = training_frame(seed=3)
    outcome, view = validate_and_deploy(models, "churn", 2, x, y, actor="pipeline", clock=clock)
    assert outcome.passed and view is not None
    assert view.state == "waiting_for_approvals" and view.author == "dave"
