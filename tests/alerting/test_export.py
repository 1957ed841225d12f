"""The Prometheus rule file: the PromQL each rule kind becomes, and ``promtool`` accepting it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from shipyard.alerting.config import build_config
from shipyard.alerting.defaults import default_rules
from shipyard.alerting.export import prometheus_rule_file, promql
from shipyard.alerting.matchers import Matcher
from shipyard.alerting.rules import PAGE_WINDOWS, Rule


def test_each_kind_becomes_its_promql() -> None:
    m = (Matcher("model", "churn"),)
    assert promql(Rule("A", "threshold", "lat", m, op=">=", threshold=0.5)) == (
        'lat{model="churn"} >= 0.5'
    )
    assert promql(Rule("B", "absence", "up", m, lookback_s=120)) == (
        'absent_over_time(up{model="churn"}[2m])'
    )
    assert promql(Rule("B2", "absence", "up", lookback_s=600, seen_within_s=86400)) == (
        "max_over_time(up[1d]) unless max_over_time(up[10m])"
    )
    assert promql(Rule("C", "forecast", "used", threshold=1, horizon_s=3600, lookback_s=1800)) == (
        "predict_linear(used[30m], 3600) >= 1"
    )
    burn = promql(Rule("D", "burn_rate", "req", error_metric="err", windows=PAGE_WINDOWS[:1]))
    assert (
        burn
        == "((rate(err[1h]) / rate(req[1h]) > 0.0144) and (rate(err[5m]) / rate(req[5m]) > 0.0144))"
    )


def test_rule_file_keeps_for_labels_and_annotations(tmp_path: Path) -> None:
    cfg = build_config(
        {
            "rules": [
                {
                    "name": "Slow",
                    "metric": "lat",
                    "threshold": 1,
                    "for": "2m",
                    "keep_firing_for": "5m",
                    "labels": {"team": "ml"},
                    "annotations": {"summary": "{{ $labels.model }} slow"},
                }
            ]
        },
        home=tmp_path,
    )
    groups = yaml.safe_load(prometheus_rule_file(cfg.rules))["groups"]
    slow = next(r for r in groups[0]["rules"] if r["alert"] == "Slow")
    assert slow == {
        "alert": "Slow",
        "expr": "lat > 1",
        "for": "2m",
        "keep_firing_for": "5m",
        "labels": {"team": "ml", "severity": "warning"},
        "annotations": {"summary": "{{ $labels.model }} slow"},
    }


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_export(tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    silent = Rule("Silent", "absence", "up", lookback_s=600, seen_within_s=86400)
    rules = [*default_rules(), silent]
    path.write_text(prometheus_rule_file(rules))
    done = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout
