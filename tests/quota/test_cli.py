"""The quota commands, run through Typer against a real workspace."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from shipyard.cli.quota import register
from shipyard.errors import ConfigError
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


def test_a_bad_pool_file_changes_nothing(
    cli: typer.Typer, workspace: Workspace, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(POOLS.replace("share: 0.25", "share: 0.75"))  # shares add up to 125 %
    with pytest.raises(ConfigError, match="guaranteed shares of cpu add up to 10"):
        CliRunner().invoke(cli, ["quota", "apply", str(bad)], catch_exceptions=False)
    bad.write_text("pools: [{name: x, capacity: {cpu: lots}}]")
    with pytest.raises(ConfigError, match="not a quantity"):
        CliRunner().invoke(cli, ["quota", "apply", str(bad)], catch_exceptions=False)
    assert list_pools(workspace.store) == []


def test_serving_with_a_given_latency(cli: typer.Typer, workspace: Workspace) -> None:
    out = run(
        cli, "quota", "serving", "churn", "--qps", "200", "--latency-ms", "25", "--concurrency", "2"
    )
    assert "6 replicas" in out and "cpu=6" in out
