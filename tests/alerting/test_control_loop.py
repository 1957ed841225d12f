"""A receiver that hangs holds up neither rule evaluation nor rollouts; two daemons with a
black-holed receiver keep one leader and deliver each notification once; a daemon whose lease
is running out stops sending before another daemon can take over.

Real daemons (threads of this process, the real clock), a real SQLite file or PostgreSQL, a
real HTTP receiver on 127.0.0.1 that accepts a request and does not answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from alerting_testkit import CollectingReceiver, write_point
from sklearn.linear_model import LogisticRegression
from sqlalchemy import select

from shipyard.alerting.config import AlertingConfig, build_config
from shipyard.alerting.cycle import evaluate
from shipyard.alerting.defaults import default_rules
from shipyard.clock import FakeClock
from shipyard.daemon import Daemon, DaemonContext
from shipyard.daemon.tasks import builtin_tasks
from shipyard.deploy.policy import set_policy
from shipyard.deploy.rollout import get_rollout, start_rollout
from shipyard.registry import Registry
from shipyard.statuses import RolloutState
from shipyard.store.alerting import AlertRecord, LeaderLease, NotificationRecord
from shipyard.workspace import Workspace

T0 = 1_700_000_000.0
STRAIGHT_TO_PRODUCTION = """
approvals: {start: {count: 0}}
staging: {smoke: false}
"""


def _config(home: Path, url: str, timeout: str) -> AlertingConfig:
    return build_config(
        {
            "route": {"receiver": "hook", "group_wait": 0, "group_by": ["alertname"]},
            "receivers": [{"name": "hook", "type": "webhook", "url": url, "timeout": timeout}],
            "defaults": {r.name: False for r in default_rules()},
            "rules": [
                {"name": "Drift", "metric": "drift", "threshold": 0.5, "lookback": "1h"},
                {"name": "Slow", "metric": "latency", "threshold": 1.0, "lookback": "1h"},
            ],
        },
        home=home,
    )


def _context(ws: Workspace, cfg: AlertingConfig) -> DaemonContext:
    return DaemonContext(ws, cfg, ws.clock, lambda p: None, ws.settings.logs_dir)


def _until(condition: Callable[[], object], timeout_s: float, what: str) -> float:
    """Poll until ``condition()`` holds; returns how long that took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout_s}s")


class Running:
    """Daemons started in threads of this process; :meth:`stop_all` stops and joins them."""

    def __init__(self) -> None:
        self.started: list[tuple[Daemon, threading.Thread]] = []

    def __call__(self, daemon: Daemon) -> Daemon:
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        self.started.append((daemon, thread))
        return daemon

    def stop_all(self) -> None:
        for daemon, _ in self.started:
            daemon.stop()
        for _, thread in self.started:
            thread.join(30)
            assert not thread.is_alive()
        self.started = []


@pytest.fixture
def running() -> Iterator[Running]:
    daemons = Running()
    yield daemons
    daemons.stop_all()


def _firing(ws: Workspace, rule: str) -> bool:
    with ws.store.session() as s:
        states = s.scalars(select(AlertRecord.state).where(AlertRecord.rule.contains(rule)))
        return "firing" in list(states)


def _attempts(ws: Workspace) -> dict[str, tuple[str, int]]:
    with ws.store.session() as s:
        return {n.group_key: (n.status, n.attempts) for n in s.scalars(select(NotificationRecord))}


def test_a_hung_receiver_holds_up_neither_rule_evaluation_nor_rollouts(
    tmp_path: Path, webhook: CollectingReceiver, running: Running
) -> None:
    ws = Workspace.open(home=tmp_path / "home")
    x = pd.DataFrame(np.random.default_rng(0).normal(size=(60, 2)), columns=["a", "b"])
    Registry.of(ws).register(
        "churn", LogisticRegression().fit(x.to_numpy(), x["a"] > 0), training_data=x
    )
    set_policy(ws.store, "churn", STRAIGHT_TO_PRODUCTION, actor="admin")
    webhook.script = ["hang"]  # accepts the first request and never answers it
    cfg = _config(tmp_path / "home", webhook.url, timeout="20s")
    running(
        Daemon(
            _context(ws, cfg),
            tick_s=0.05,
            intervals_s={"rollouts.advance": 0.1},
            tasks=builtin_tasks(),
        )
    )

    write_point(ws.store, "drift", {"column": "age"}, time.time(), 0.9)
    assert webhook.arrived.wait(20), "the daemon never tried to deliver"
    hung = webhook.received[0]

    # while the receiver hangs: a new condition is evaluated within a few ticks…
    write_point(ws.store, "latency", {"model": "churn"}, time.time(), 3.0)
    _until(lambda: _firing(ws, "Slow"), 3.0, "the new alert condition was not evaluated")
    # …and a rollout goes from approvals to production
    rid = start_rollout(ws.store, "churn", 1, actor="carol").id
    _until(
        lambda: get_rollout(ws.store, rid).state == RolloutState.PRODUCTION, 10.0, "rollout stuck"
    )
    assert not webhook.delivered
    assert [a for _, a in _attempts(ws).values()] == [0, 0]  # the first attempt still in flight

    webhook.release.set()  # the receiver drops the hung request; its next answers are 200
    _until(lambda: len(webhook.delivered) == 2, 20.0, "not delivered once the receiver answered")
    first = next(r for r in webhook.delivered if r.body["groupLabels"]["alertname"] == "Drift")
    assert first.headers["Idempotency-Key"] == hung.headers["Idempotency-Key"]
    _until(lambda: {s for s, _ in _attempts(ws).values()} == {"delivered"}, 5.0, "not recorded")
    ws.store.dispose()


def test_two_daemons_and_a_black_holed_receiver_keep_one_leader_and_deliver_once(
    migrated_db_url: str,
    tmp_path: Path,
    webhook: CollectingReceiver,
    running: Running,
) -> None:
    home = tmp_path / "home"
    workspaces = [Workspace.open(home=home, db_url=migrated_db_url) for _ in range(2)]
    store = workspaces[0].store
    now = time.time()
    with store.session() as s:
        s.add_all(
            NotificationRecord(
                idempotency_key=f"key-{i:02d}", receiver="hook", group_key=f"g{i}",
                payload={"alerts": []}, status="pending", attempts=0, created_at=now,
                next_attempt_at=now,
            )
            for i in range(20)
        )  # fmt: skip
    webhook.script = ["hang", "hang", "hang"]  # black-holed for three attempts, then answers
    cfg = _config(home, webhook.url, timeout="2s")  # close to the lease: renewal must not wait
    deliver = [t for t in builtin_tasks() if t.name == "notifications.deliver"]
    holders: set[str] = set()
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            with store.session() as s:
                holders.update(s.scalars(select(LeaderLease.holder)))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for n, ws in enumerate(workspaces):
        running(
            Daemon(_context(ws, cfg), tick_s=0.05, leader_ttl_s=3, tasks=deliver, holder=f"d{n}")
        )
    try:
        _until(lambda: len(webhook.delivered) >= 20, 60.0, "not all delivered")
        time.sleep(0.5)  # time for a second, wrong, delivery to arrive
    finally:
        sampling.set()
        sampler.join(5)
        running.stop_all()
    keys = [r.headers["Idempotency-Key"] for r in webhook.delivered]
    assert sorted(keys) == [f"key-{i:02d}" for i in range(20)]  # each once
    assert len([r for r in webhook.received if r.status == 0]) == 3
    assert len(holders) == 1, f"leadership moved between live daemons: {holders}"
    for ws in workspaces:
        ws.store.dispose()


def test_a_leader_whose_lease_runs_out_stops_sending_before_another_can_start(
    workspace: Workspace, webhook: CollectingReceiver
) -> None:
    clock = FakeClock(T0)
    cfg = _config(workspace.settings.home, webhook.url, timeout="2s")
    deliver = [t for t in builtin_tasks() if t.name == "notifications.deliver"]
    first, second = (
        Daemon(
            DaemonContext(workspace, cfg, clock, lambda p: None, workspace.settings.logs_dir),
            leader_ttl_s=15,
            tasks=deliver,
            holder=name,
        )
        for name in ("first", "second")
    )
    assert first.renew() and not second.renew()
    write_point(workspace.store, "drift", {"column": "age"}, clock.time(), 0.9)
    assert evaluate(workspace.store, cfg, clock.time()).notifications == 1
    clock.advance(13.8)  # first stalled and did not renew: 1.2 s of its lease are left
    assert first.is_leader and first.send_window() == pytest.approx(0.7)
    assert first._run_due(deliver) == ["notifications.deliver"]
    assert webhook.received == []  # too little lease left for any attempt: nothing sent
    assert not second.renew()  # the lease is still first's: nobody sends
    clock.advance(1.3)
    assert second.renew() and not first.is_leader
    assert second._run_due(deliver) == ["notifications.deliver"]
    assert [r.status for r in webhook.received] == [200]
