"""With the real Prometheus and Alertmanager (Debian's ``prometheus``, ``prometheus-alertmanager``):
Prometheus scrapes Shipyard's ``/metrics`` and evaluates the exported rules; Shipyard delivers
its own alert to Alertmanager's v2 API; Alertmanager forwards both to a webhook."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from alerting_testkit import CollectingReceiver, write_point

from shipyard.alerting.config import build_config
from shipyard.alerting.cycle import evaluate
from shipyard.alerting.defaults import default_rules
from shipyard.alerting.export import prometheus_rule_file
from shipyard.alerting.exposition import MetricsServer
from shipyard.alerting.outbox import deliver_due
from shipyard.clock import SYSTEM_CLOCK
from shipyard.store import Store

BINARIES = ("prometheus", "prometheus-alertmanager", "promtool")
MISSING = [b for b in BINARIES if shutil.which(b) is None]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        bool(MISSING),
        reason=f"{', '.join(MISSING)} not installed (apt-get install prometheus "
        "prometheus-alertmanager; .ci/run does it)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.terminate()
    for proc in started:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_prometheus_evaluates_the_export_and_alertmanager_forwards_both(
    tmp_path: Path,
    sqlite_store: Store,
    webhook: CollectingReceiver,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    am_port, prom_port = _free_port(), _free_port()
    am_url = f"http://127.0.0.1:{am_port}"
    cfg = build_config(
        {
            "route": {"receiver": "am", "group_wait": 0},
            "receivers": [{"name": "am", "type": "alertmanager", "url": am_url}],
            "defaults": {r.name: False for r in default_rules()},
            "rules": [
                {
                    "name": "ShipyardDrift",
                    "metric": "shipyard_drift_score",
                    "threshold": 0.5,
                    "lookback": "1h",
                    "severity": "ticket",
                    "annotations": {"summary": "drift on {{ $labels.column }}"},
                }
            ],
        },
        home=tmp_path,
    )
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(prometheus_rule_file(cfg.rules).replace("ShipyardDrift", "PromDrift"))
    check = subprocess.run(
        ["promtool", "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr

    write_point(sqlite_store, "shipyard_drift_score", {"column": "age"}, time.time(), 0.9)
    metrics = MetricsServer(sqlite_store).start()
    try:
        (tmp_path / "am.yml").write_text(
            yaml.safe_dump(
                {
                    "route": {
                        "receiver": "hook",
                        "group_by": ["alertname"],
                        "group_wait": "1s",
                        "group_interval": "1s",
                        "repeat_interval": "1h",
                    },
                    "receivers": [{"name": "hook", "webhook_configs": [{"url": webhook.url}]}],
                }
            )
        )
        processes.append(
            subprocess.Popen(
                [
                    "prometheus-alertmanager",
                    f"--config.file={tmp_path / 'am.yml'}",
                    f"--storage.path={tmp_path / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        (tmp_path / "prom.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(rules_file)],
                    "alerting": {
                        "alertmanagers": [
                            {"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}
                        ]
                    },
                    "scrape_configs": [
                        {
                            "job_name": "shipyard",
                            "static_configs": [{"targets": [f"127.0.0.1:{metrics.port}"]}],
                        }
                    ],
                }
            )
        )
        processes.append(
            subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={tmp_path / 'prom.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        _wait_http(f"{am_url}/-/ready")
        _wait_http(f"http://127.0.0.1:{prom_port}/-/ready")

        now = time.time()
        assert evaluate(sqlite_store, cfg, now).notifications == 1
        [outcome] = deliver_due(sqlite_store, cfg.receivers, SYSTEM_CLOCK)
        assert outcome.status == "delivered", outcome.detail

        deadline = time.monotonic() + 60
        names: set[str] = set()
        while time.monotonic() < deadline and names != {"ShipyardDrift", "PromDrift"}:
            names = {a["labels"]["alertname"] for r in webhook.delivered for a in r.body["alerts"]}
            time.sleep(0.2)
        with urllib.request.urlopen(
            f"http://127.0.0.1:{prom_port}/api/v1/alerts", timeout=5
        ) as response:
            prom_alerts = json.loads(response.read())["data"]["alerts"]
    finally:
        metrics.stop()
    assert names == {"ShipyardDrift", "PromDrift"}
    assert [(a["labels"]["alertname"], a["labels"]["column"], a["state"]) for a in prom_alerts] == [
        ("PromDrift", "age", "firing")
    ]
    ours = next(
        a
        for r in webhook.delivered
        for a in r.body["alerts"]
        if a["labels"]["alertname"] == "ShipyardDrift"
    )
    assert ours["annotations"]["summary"] == "drift on age"
