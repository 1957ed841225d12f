"""Real daemon processes: a SIGKILL between the state change and the delivery loses nothing,
and two daemons against one PostgreSQL database deliver once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from alerting_testkit import CollectingReceiver, write_point
from sqlalchemy import select

from shipyard.alerting.defaults import default_rules
from shipyard.store import Store
from shipyard.store.alerting import AlertRecord, LeaderLease, NotificationRecord

START_S = 90.0
"""How long a daemon process may take to start and act: its imports alone take seconds of CPU,
many more on a loaded machine (20 s was not always enough on 2 busy cores)."""

DAEMON_MAIN = (
    "import typer\n"
    "from shipyard.cli.daemon import register\n"
    "app = typer.Typer()\n"
    "@app.callback()\n"
    "def root() -> None: ...\n"
    "register(app)\n"
    "app()\n"
)


def _alerting_yaml(home: Path, url: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "alerting.yaml").write_text(
        yaml.safe_dump(
            {
                "route": {"receiver": "hook", "group_wait": 0},
                "receivers": [{"name": "hook", "type": "webhook", "url": url, "timeout": "1s"}],
                "defaults": {r.name: False for r in default_rules()},
                "rules": [{"name": "Drift", "metric": "drift", "threshold": 0.5, "lookback": "1h"}],
            }
        )
    )


def _start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", DAEMON_MAIN, "daemon", "--tick", "0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_sigkill_between_state_change_and_delivery_is_delivered_after_restart(
    tmp_path: Path, webhook: CollectingReceiver
) -> None:
    home = tmp_path / "home"
    _alerting_yaml(home, webhook.url)
    store = Store(f"sqlite:///{home / 'shipyard.db'}")
    write_point(store, "drift", {"column": "age"}, time.time(), 0.9)
    webhook.script = ["hang"]  # the first delivery is in flight when the daemon dies
    env = {**os.environ, "SHIPYARD_DAEMON__LEADER_TTL_S": "3"}  # the dead leader's lease
    first = _start(env)
    try:
        assert webhook.arrived.wait(START_S), "the daemon never tried to deliver"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        _stop(first)
    with store.session() as s:
        assert s.scalars(select(AlertRecord.state)).one() == "firing"
        row = s.scalars(select(NotificationRecord)).one()
        assert row.status == "pending" and row.attempts == 0
    webhook.release.set()
    second = _start(env)
    try:
        [got] = webhook.wait_for(1, timeout_s=START_S)
    finally:
        _stop(second)
    abandoned = webhook.received[0]
    assert abandoned.status == 0
    assert got.headers["Idempotency-Key"] == abandoned.headers["Idempotency-Key"]
    with store.session() as s:
        assert s.scalars(select(NotificationRecord.status)).one() == "delivered"
    store.dispose()


def test_two_daemons_on_postgresql_deliver_once(
    tmp_path: Path, webhook: CollectingReceiver, migrated_postgres_url: str
) -> None:
    home = tmp_path / "home"
    _alerting_yaml(home, webhook.url)
    store = Store(migrated_postgres_url)
    env = {**os.environ, "SHIPYARD_DB_URL": migrated_postgres_url}
    daemons = [_start(env), _start(env)]
    try:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:  # both up and one of them leading
            with store.session() as s:
                if s.scalars(select(LeaderLease)).first() is not None:
                    break
            time.sleep(0.1)
        write_point(store, "drift", {"column": "age"}, time.time(), 0.9)
        webhook.wait_for(1, timeout_s=START_S)
        time.sleep(1.5)  # time for a second, wrong, delivery to show up
    finally:
        for proc in daemons:
            _stop(proc)
    assert len(webhook.received) == 1
    assert all(proc.returncode == 0 for proc in daemons)
    store.dispose()
