"""The quota commands, run through Typer against a real workspace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from shipyard.cli.quota import register
from shipyard.errors import InvalidInput
from shipyard.quota.admission import LeaseManager, LeaseRequest
from shipyard.quota.pools import list_pools
from shipyard.workspace import Workspace

POOLS = """
pools:
  - name: shared
    capacity: {cpu: 8, memory: 32Gi}
    members:
      - {pipeline: etl, share: 0.5, cap: 0.75}
      - {pipeline: train, share: 0.25}
"""


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def run(app: typer.Typer, *args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_apply_then_status_shows_holders_and_waiters(
    cli: typer.Typer, workspace: Workspace, tmp_path: Path
) -> None:
    (tmp_path / "pools.yaml").write_text(POOLS)
    assert "pool shared (shared)" in run(cli, "quota", "apply", str(tmp_path / "pools.yaml"))
    leases = LeaseManager(workspace.store, default_pool="shared")
    leases.acquire(LeaseRequest("etl", {"cpu": 6, "memory": "8Gi"}))
    leases.submit(LeaseRequest("train", {"cpu": 4}))
    out = run(cli, "quota", "status")
    assert "6 of 8" in out and "etl holds cpu=6, memory=8.0Gi" in out
    assert "train waits for cpu=4" in out
    assert "member train: share cpu=2" in run(cli, "quota", "pools")
    leases.close()


def test_pools_and_status_show_each_pools_scheduling_policy(
    cli: typer.Typer, workspace: Workspace, tmp_path: Path
) -> None:
    (tmp_path / "pools.yaml").write_text(
        POOLS.replace("cap: 0.75}", "cap: 0.75, max_queued_runs: 2}")
        + "    preemption: borrowers\n    preemption_grace_s: 45\n    backfill: false\n"
        + "    max_queued_runs: 7\n"
        + "  - name: plain\n    capacity: {cpu: 2}\n"
        + "  - name: patient\n    capacity: {cpu: 2}\n    backfill_grace_s: 20\n"
        + "    quota_release: on-terminating\n"
    )
    run(cli, "quota", "apply", str(tmp_path / "pools.yaml"))
    policy = "backfill off; preemption borrowers (grace 45.0s); queued runs per pipeline: 7"
    listed = run(cli, "quota", "pools")
    assert policy in listed and "weight 1; queued runs 2" in listed
    assert "backfill on; preemption never; queued runs per pipeline: no limit" in listed
    assert (
        "backfill on (yields within 20.0s); preemption never; a lease taken back frees its "
        "room when told to stop (on-terminating);" in listed
    )
    assert policy in run(cli, "quota", "status")
    shown = {p["name"]: p for p in json.loads(run(cli, "quota", "pools", "--json"))}
    assert shown["shared"]["policy"] == {
        "preemption": "borrowers",
        "preemption_grace_s": 45.0,
        "backfill": False,
        "max_queued_runs": 7,
        "backfill_grace_s": 0.0,
        "quota_release": "on-terminal",
    }
    assert shown["shared"]["members"]["etl"]["max_queued_runs"] == 2


def test_a_bad_pool_file_changes_nothing(
    cli: typer.Typer, workspace: Workspace, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(POOLS.replace("share: 0.25", "share: 0.75"))  # shares add up to 125 %
    with pytest.raises(InvalidInput, match="guaranteed shares of cpu add up to 10"):
        CliRunner().invoke(cli, ["quota", "apply", str(bad)], catch_exceptions=False)
    bad.write_text("pools: [{name: x, capacity: {cpu: lots}}]")
    with pytest.raises(InvalidInput, match="not a quantity"):
        CliRunner().invoke(cli, ["quota", "apply", str(bad)], catch_exceptions=False)
    assert list_pools(workspace.store) == []


def test_serving_with_a_given_latency(cli: typer.Typer, workspace: Workspace) -> None:
    out = run(
        cli, "quota", "serving", "churn", "--qps", "200", "--latency-ms", "25", "--concurrency", "2"
    )
    assert "6 replicas" in out and "cpu=6" in out


def test_serving_measures_a_registered_model(cli: typer.Typer, workspace: Workspace) -> None:
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from shipyard.registry.models import register_model

    frame = pd.DataFrame({"a": np.arange(20.0), "b": np.arange(20.0) % 3})
    model = LogisticRegression().fit(frame.to_numpy(), np.arange(20) % 2)
    register_model("churn", model, ws=workspace, training_data=frame, alias="champion")
    out = run(cli, "quota", "serving", "churn@champion", "--qps", "50", "--seconds", "0.2")
    assert "churn v1 measured here" in out and "replicas" in out


def test_plan_from_pipelines_history_and_reservations(
    cli: typer.Typer, workspace: Workspace, tmp_path: Path
) -> None:
    from shipyard.store.tables import PipelineRecord, Run, StepRun

    (tmp_path / "pools.yaml").write_text(POOLS)
    run(cli, "quota", "apply", str(tmp_path / "pools.yaml"))
    with workspace.store.session() as s:
        for name in ("etl", "train"):
            s.add(
                PipelineRecord(
                    name=name,
                    kind="data",
                    file=f"{name}.py",
                    schedule="0 2 * * *",
                    spec={"pool": "shared"},
                    updated_at=0.0,
                )
            )
            r = Run(pipeline=name, kind="data", file="x.py", status="succeeded", created_at=0.0)
            s.add(r)
            s.flush()
            s.add(
                StepRun(
                    run_id=r.id,
                    step="only",
                    status="succeeded",
                    started_at=0.0,
                    ended_at=3600.0,
                    peak_rss_bytes=2 * 1024**3,
                    cpu_seconds=3000.0,
                )
            )
    result = CliRunner().invoke(cli, ["quota", "plan"], catch_exceptions=False)
    assert "scheduled peak" in result.output and "etl, train" in result.output
    assert result.exit_code == 0, result.output
    run(
        cli,
        "quota",
        "serving",
        "m",
        "--qps",
        "1000",
        "--latency-ms",
        "50",
        "--reserve",
        "shared",
        "--cpu-per-replica",
        "1",
    )
    result = CliRunner().invoke(cli, ["quota", "plan"], catch_exceptions=False)
    assert result.exit_code == 1 and "NOT enough quota" in result.output
