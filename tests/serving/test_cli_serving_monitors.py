"""``shipyard monitors serving MODEL``: the serving monitors from the command line."""

from __future__ import annotations

import json
import time

import typer
from sqlalchemy import select
from typer.testing import CliRunner

from shipyard.cli import Group, monitors
from shipyard.serving.instances import register_instance
from shipyard.store.tables import MetricPoint

from .conftest import Running


def _app() -> typer.Typer:
    app = typer.Typer(cls=Group)  # the CLI's root group: errors become one line
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
    assert "no model named 'nope'" in result.output


def test_without_url_the_running_servers_are_probed(served: Running) -> None:
    register_instance(
        served.ws.store, url=served.url, host="127.0.0.1", workers=1, ttl_s=30,
        now=time.time(), models=["iris"],
    )  # fmt: skip
    result = CliRunner().invoke(_app(), ["monitors", "serving", "iris", "--json"])
    assert result.exit_code == 0, result.output
    checks = {c["monitor"]: c for c in json.loads(result.output)}
    assert checks["serving.outage"]["status"] == "ok"
    with served.ws.store.session() as s:
        up = s.scalars(
            select(MetricPoint.value).where(MetricPoint.name == "shipyard_serving_probe_up")
        ).all()
    assert up == [1.0]
    assert checks["serving.quota"]["summary"] == "no running server of it holds a quota lease"
