"""``shipyard alerts …`` as a user meets it (in-process through Typer's runner, with the same
one-line error handling as ``shipyard.cli.main``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from alerting_testkit import CollectingReceiver
from typer.testing import CliRunner

from shipyard.cli import alerts, daemon
from shipyard.errors import ShipyardError
from shipyard.workspace import Workspace

app = typer.Typer()


@app.callback()
def _root() -> None: ...


alerts.register(app)
daemon.register(app)


@pytest.fixture(autouse=True)
def _workspace() -> None:
    """Read-only commands refuse a missing workspace (issue 19): these run in one."""
    Workspace.open()


def shipyard(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    if isinstance(result.exception, ShipyardError):
        return 1, f"error: {result.exception}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_silence_then_list_silences_records_who_and_why() -> None:
    code, out = shipyard(
        "alerts", "silence", 'alertname="DataDrift"', "--for", "2h", "-c", "backfill running"
    )
    assert code == 0 and "silence" in out
    code, out = shipyard("alerts", "silences", "--json")
    [silence] = json.loads(out)
    assert silence["createdBy"] == "tester" and silence["comment"] == "backfill running"
    assert silence["matchers"] == [
        {"name": "alertname", "value": "DataDrift", "isRegex": False, "isEqual": True}
    ]
    code, out = shipyard("alerts", "unsilence", silence["id"])
    assert code == 0
    assert json.loads(shipyard("alerts", "silences", "--json")[1])[0]["active"] is False


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["alerts", "silence", "nonsense", "-c", "x"], "bad matcher"),
        (["alerts", "silence", 'a="b"', "--for", "forever", "-c", "x"], "bad duration"),
        (["alerts", "unsilence", "nope"], "no silence named 'nope'"),
        (["alerts", "list", "--state", "angry"], "--state must be"),
        (["alerts", "test", "nobody"], "no receiver named 'nobody'"),
        (["alerts", "export", "--format", "nagios"], "--format must be 'prometheus'"),
    ],
)
def test_bad_input_is_one_clear_error(args: list[str], error: str) -> None:
    code, out = shipyard(*args)
    assert code == 1 and error in out


def test_rules_lists_defaults_with_promql() -> None:
    code, out = shipyard("alerts", "rules", "--json")
    assert code == 0
    rules = {r["name"]: r for r in json.loads(out)}
    assert rules["ModelOutage"]["promql"] == "shipyard_serving_probe_up < 1"
    assert rules["DataDrift"]["origin"] == "default"


def test_test_sends_to_the_receiver_and_says_what_happened(
    tmp_path: Path, webhook: CollectingReceiver
) -> None:
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "home" / "alerting.yaml").write_text(
        f"receivers: [{{name: hook, type: webhook, url: '{webhook.url}'}}]\n"
    )
    code, out = shipyard("alerts", "test", "hook")
    assert code == 0 and "accepted it" in out
    assert webhook.delivered[0].body["alerts"][0]["labels"]["alertname"] == "ShipyardTest"
    webhook.script = [400]
    code, out = shipyard("alerts", "test", "hook")
    assert code == 1 and "HTTP 400" in out and "would not be retried" in out
    code, out = shipyard("alerts", "receivers")
    assert "hook" in out and webhook.url in out


def test_export_writes_a_rule_file(tmp_path: Path) -> None:
    code, _ = shipyard("alerts", "export", "--format", "prometheus", "-o", str(tmp_path / "r.yml"))
    assert code == 0
    assert "alert: ModelOutage" in (tmp_path / "r.yml").read_text()


def test_list_shows_no_alerts_on_a_fresh_workspace() -> None:
    assert shipyard("alerts", "list") == (0, "no alerts\n")


def test_rules_and_receivers_show_what_the_running_daemon_loaded(
    tmp_path: Path, webhook: CollectingReceiver
) -> None:
    """A daemon started with --config elsewhere than the home: the commands follow it."""
    code, out = shipyard("alerts", "receivers")
    assert code == 0 and "config: defaults (no daemon has recorded" in out
    elsewhere = tmp_path / "examples" / "alerting.yaml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(
        f"receivers: [{{name: team-hook, type: webhook, url: '{webhook.url}'}}]\n"
        "rules: [{name: FeatureDrift, metric: drift, threshold: 0.3}]\n"
    )
    code, out = shipyard("daemon", "--once", "--config", str(elsewhere))
    assert code == 0 and "leader: True" in out, out

    code, out = shipyard("alerts", "rules", "--json")
    rules = {r["name"]: r for r in json.loads(out)}
    assert rules["FeatureDrift"]["origin"] == str(elsewhere)
    code, out = shipyard("alerts", "receivers")
    assert "team-hook" in out and webhook.url in out
    assert f"config: {elsewhere}, as loaded by daemon" in out and "(running)" in out
    code, out = shipyard("alerts", "rules")
    assert "FeatureDrift" in out and f"config: {elsewhere}" in out
    # a file given on the command line still wins
    code, out = shipyard("alerts", "receivers", "--config", str(tmp_path / "none.yaml"))
    assert code == 1 and "cannot read" in out
