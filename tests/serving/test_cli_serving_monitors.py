"""``shipyard monitors serving MODEL``: the serving monitors from the command line."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from shipyard.cli import monitors

from .conftest import Running


def _app() -> typer.Typer:
    app = typer.Typer()
    monitors.register(app)
    return app


def test_serving_monitors_run_over_real_traffic_and_record_findings(served: Running) -> None:
    with served.client() as client:
        for i in range(20):
            row = {"columns": ["a", "b", "c"], "data": [[0.1 * i, 1.0, 2.0]]}
            client.post("/models/iris/invocations", json={"dataframe_split": row})
        bad = client.post("/models/iris/invocations", json={"dataframe_split": {"columns": []}})
        assert bad.status_code == 400
    result = CliRunner().invoke(
        _app(), ["monitors", "serving", "iris", "--url", served.url, "--json"]
    )
    assert result.exit_code == 0, result.output
    checks = {c["monitor"]: c for c in json.loads(result.output)}
    assert checks["serving.outage"]["status"] == "ok"
    assert all(c["model"] == "iris" for c in checks.values())


def test_an_unknown_model_is_one_clear_line(served: Running) -> None:
    result = CliRunner().invoke(_app(), ["monitors", "serving", "nope"])
    assert result.exit_code == 1
    assert "model 'nope' not found" in result.output
