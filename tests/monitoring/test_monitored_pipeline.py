"""``observe`` inside real pipeline runs (step processes, the runner's hook), and the
``shipyard monitors`` command on what they recorded."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from shipyard.cli import Group
from shipyard.cli import monitors as monitors_cli
from shipyard.cli.runs import run_services
from shipyard.errors import InvalidInput, NotFound
from shipyard.monitoring import observe
from shipyard.pipelines import Runner
from shipyard.pipelines.loader import load_pipeline
from shipyard.store.monitoring import MonitorProfile, MonitorSettings
from shipyard.store.tables import Finding, MetricPoint
from shipyard.workspace import Workspace

PIPELINES = """
import numpy as np
import pandas as pd
from shipyard.monitoring import observe
from shipyard.pipelines import Pipeline, step


def frame(n, shift, seed):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"x": rng.normal(shift, 1.0, n), "y": rng.normal(size=n), "label": rng.integers(0, 2, n)}
    )


@step()
def reference():
    observe("events", frame(3000, 0.0, 1), role="reference", label="label")
    return 1


@step()
def batch(shift: float):
    seen = observe("events", frame(3000, shift, 2), role="current", label="label")
    return {c.monitor: c.status for c in seen.checks}


@step()
def fit(fail: bool):
    if fail:
        raise RuntimeError("out of memory")
    return 1


ingest = Pipeline(
    "ingest",
    kind="data",
    monitors={"label_drift": False, "feature_drift": {"reference_pipeline": "ingest-reference"}},
)


@ingest
def build_ingest(shift: float = 0.0):
    batch(shift=shift)


publish_reference = Pipeline("ingest-reference", kind="data")


@publish_reference
def build_reference():
    reference()


train = Pipeline("train", kind="training", monitors={"training_time": {"min_history": 2}})


@train
def build_train(fail: bool = False):
    fit(fail=fail)
"""


@pytest.fixture
def pipelines(tmp_path: Path) -> Path:
    path = tmp_path / "monitored.py"
    path.write_text(textwrap.dedent(PIPELINES), encoding="utf-8")
    return path


def run(ws: Workspace, file: Path, name: str, params: dict[str, object] | None = None) -> str:
    path, pipeline = load_pipeline(f"{file}:{name}")
    with Runner(ws, **run_services(ws)) as runner:  # wired as `shipyard run` wires it
        return runner.run(path, pipeline, params).run_id


def cli(*args: str) -> tuple[int, str]:
    app = typer.Typer(cls=Group)  # the CLI's root group: errors become one line
    monitors_cli.register(app)
    app.command("noop", hidden=True)(lambda: None)  # keep "monitors" a sub-command
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    return result.exit_code, result.output


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend_ws(request: pytest.FixtureRequest) -> Workspace:
    """The SQLite workspace, then one whose metadata lives in PostgreSQL."""
    name = "workspace" if request.param == "sqlite" else "pg_workspace"
    ws: Workspace = request.getfixturevalue(name)
    return ws


def test_observe_in_steps_records_profiles_findings_and_metrics(
    backend_ws: Workspace, pipelines: Path
) -> None:
    workspace = backend_ws
    run(workspace, pipelines, "ingest-reference")
    run_id = run(workspace, pipelines, "ingest", {"shift": 0.5})
    with workspace.store.session() as s:
        profiles = s.scalars(select(MonitorProfile).order_by(MonitorProfile.id)).all()
        assert [(p.pipeline, p.role, p.rows) for p in profiles] == [
            ("ingest-reference", "reference", 3000),
            ("ingest", "current", 3000),
        ]
        assert profiles[1].run_id == run_id and profiles[1].step == "batch"
        findings = s.scalars(select(Finding).where(Finding.run_id == run_id)).all()
        # label_drift is off in the definition; feature drift names x, not y; x and y are few
        # enough numeric columns for the multivariate monitor
        assert sorted(f.monitor for f in findings) == [
            "data_problems",
            "feature_drift",
            "multivariate_drift",
        ]
        drift = next(f for f in findings if f.monitor == "feature_drift")
        assert drift.evidence["drifted_columns"] == ["x"]
        scores = s.scalars(
            select(MetricPoint).where(MetricPoint.name == "shipyard_drift_score")
        ).all()
        assert {p.labels["column"] for p in scores} == {"x", "y"}
        assert {p.labels["pipeline"] for p in scores} == {"ingest"}
        settings = s.get(MonitorSettings, "ingest")  # kept by the runner's hook
        assert settings is not None
        assert settings.monitors["monitors"]["label_drift"]["enabled"] is False


def test_the_runner_judges_training_runs_and_the_cli_lists_them(
    workspace: Workspace, pipelines: Path
) -> None:
    run(workspace, pipelines, "train")
    failed = run(workspace, pipelines, "train", {"fail": True})
    run(workspace, pipelines, "ingest-reference")
    run(workspace, pipelines, "ingest", {"shift": 0.5})
    with workspace.store.session() as s:
        finding = s.scalars(
            select(Finding).where(Finding.run_id == failed, Finding.monitor == "training_failures")
        ).one()
        assert finding.status == "alert" and "out of memory" in finding.summary

    code, out = cli("monitors", "list", "--json")
    assert code == 0
    listed = {p["pipeline"]: p for p in json.loads(out)}
    assert set(listed) == {"train", "ingest", "ingest-reference"}
    train = {m["monitor"]: m for m in listed["train"]["monitors"]}
    assert train["training_failures"]["status"] == "alert"
    assert train["training_time"]["options"]["min_history"] == 2
    ingest = {m["monitor"]: m for m in listed["ingest"]["monitors"]}
    assert ingest["label_drift"]["enabled"] is False
    assert ingest["feature_drift"]["status"] == "alert"  # 1 of 2 features: half drifted
    assert ingest["feature_drift"]["last"][0]["subject"] == "ingest/events"

    code, out = cli("monitors", "list")
    assert code == 0
    assert "training_failures" in out and "off" in out

    code, out = cli("monitors", "show", "ingest")
    assert code == 0 and "ingest/events" in out and "label_drift" in out

    code, out = cli("monitors", "show", "nope")
    assert code == 1 and "no pipeline named 'nope'" in out
    assert "Traceback" not in out


class TestOutsideAStep:
    def test_a_script_names_the_pipeline_and_gets_its_stored_settings(
        self, workspace: Workspace, pipelines: Path
    ) -> None:
        run(workspace, pipelines, "ingest-reference")
        run(workspace, pipelines, "ingest")
        frame = pd.DataFrame({"x": [0.1, 0.2] * 50, "y": [0.0, 1.0] * 50, "label": [0, 1] * 50})
        seen = observe("events", frame, pipeline="ingest")
        # the runner kept ingest's settings: label drift off, reference from ingest-reference
        assert [c.monitor for c in seen.checks] == [
            "feature_drift",
            "data_problems",
            "multivariate_drift",
        ]
        assert seen.reference_id is not None
        assert all(c.run_id is None for c in seen.checks)

    def test_without_a_pipeline_or_with_an_unknown_one_it_is_refused(
        self, workspace: Workspace
    ) -> None:
        frame = pd.DataFrame({"x": [1.0]})
        with pytest.raises(InvalidInput, match="needs pipeline=NAME"):
            observe("events", frame)
        with pytest.raises(NotFound, match="no pipeline named 'nope'"):
            observe("events", frame, pipeline="nope")
