"""``alerting.yaml``: defaults, overrides and switches, and one clear error for each mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.alerting.config import build_config, load_config
from shipyard.alerting.defaults import default_rules
from shipyard.errors import ConfigError


def test_without_a_file_every_default_rule_goes_to_a_log(tmp_path: Path) -> None:
    cfg = load_config(tmp_path)
    assert len(cfg.rules) == len(default_rules())
    assert {r.name for r in cfg.rules} >= {
        "DataDrift",
        "ModelOutage",
        "ErrorBudgetBurn",
        "QuotaExhaustionSoon",
        "TrainingFailed",
    }
    assert [(r.type, r.path) for r in cfg.receivers.values()] == [
        ("log", str(tmp_path / "logs" / "alerts.log"))
    ]
    assert cfg.route.group_wait_s == 30 and cfg.route.repeat_interval_s == 4 * 3600


def test_defaults_can_be_changed_or_switched_off(tmp_path: Path) -> None:
    cfg = build_config(
        {"defaults": {"ModelOutage": False, "DataDrift": {"threshold": 0.3, "for": "10m"}}},
        home=tmp_path,
    )
    names = [r.name for r in cfg.rules]
    assert "ModelOutage" not in names
    drift = next(r for r in cfg.rules if r.name == "DataDrift")
    assert (drift.threshold, drift.for_s) == (0.3, 600)


def test_file_is_found_in_the_home(tmp_path: Path) -> None:
    (tmp_path / "alerting.yaml").write_text(
        "receivers: [{name: hook, type: webhook, url: 'http://127.0.0.1:1/x'}]\n"
    )
    cfg = load_config(tmp_path)
    assert cfg.route.receiver == "hook" and cfg.source.endswith("alerting.yaml")


def test_a_per_series_absence_rule_in_yaml(tmp_path: Path) -> None:
    rule = {"name": "Silent", "kind": "absence", "metric": "up", "lookback": "10m"}
    cfg = build_config({"rules": [{**rule, "seen_within": "1d"}]}, home=tmp_path)
    silent = next(r for r in cfg.rules if r.name == "Silent")
    assert (silent.lookback_s, silent.seen_within_s) == (600, 86400)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"rules": [{"name": "X", "metric": "m", "for": "soon"}]}, "bad duration 'soon'"),
        ({"rules": [{"name": "X", "metric": "m", "op": "=>"}]}, "rules.0.op"),
        ({"rules": [{"name": "bad name", "metric": "m"}]}, "rules.0.name"),
        ({"rules": [{"name": "X", "metric": "m", "matchers": ["team"]}]}, "bad matcher 'team'"),
        ({"rules": [{"name": "X", "metric": "m", "kind": "burn_rate"}]}, "needs error_metric"),
        ({"rules": [{"name": "X", "metric": "m", "seen_within": "1d"}]}, "seen_within is for"),
        ({"receivers": [{"name": "h", "type": "webhook"}]}, "needs a url"),
        ({"receivers": [{"name": "h", "type": "webhook", "url": "ftp://x"}]}, "http://"),
        ({"receivers": [{"name": "h", "type": "pager"}]}, "receivers.0.type"),
        ({"defaults": {"NoSuchRule": False}}, "no default rule named 'NoSuchRule'"),
        ({"defaults": {"DataDrift": {"metric": "x"}}}, "cannot change 'metric'"),
        (
            {"rules": [{"name": "DataDrift", "metric": "m", "severity": "ticket"}]},
            "two rules named DataDrift",
        ),
        ({"unknown": 1}, "unknown: Extra inputs are not permitted"),
    ],
)
def test_mistakes_are_one_clear_error(tmp_path: Path, data: dict, error: str) -> None:
    with pytest.raises(ConfigError, match=error.replace("(", r"\(")):
        build_config(data, home=tmp_path)


def test_broken_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "alerting.yaml"
    path.write_text("route: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path, path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(tmp_path, path)
