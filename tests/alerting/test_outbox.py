"""Delivery from the outbox to a real HTTP receiver on 127.0.0.1, on SQLite and PostgreSQL.

The clock is fake (so backoff is a timeline); the HTTP, the database and the payloads are real.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from alerting_testkit import CollectingReceiver, write_point
from sqlalchemy import select

from shipyard.alerting.config import AlertingConfig, build_config
from shipyard.alerting.cycle import evaluate
from shipyard.alerting.defaults import default_rules
from shipyard.alerting.outbox import GIVE_UP_AFTER_S, backoff_s, deliver_due
from shipyard.alerting.receivers import DEADLINE_GRACE_S, Delivery, Receiver
from shipyard.clock import FakeClock
from shipyard.store import Store
from shipyard.store.alerting import NotificationRecord

T0 = 1_700_000_000.0


def _config(tmp_path: Path, url: str, receiver_type: str = "webhook") -> AlertingConfig:
    return build_config(
        {
            "route": {"receiver": "hook", "group_wait": 0},
            "receivers": [{"name": "hook", "type": receiver_type, "url": url, "timeout": "1s"}],
            "defaults": {r.name: False for r in default_rules()},
            "rules": [{"name": "Drift", "metric": "drift", "threshold": 0.5}],
        },
        home=tmp_path,
    )


def _fire(store: Store, cfg: AlertingConfig, clock: FakeClock) -> None:
    write_point(store, "drift", {"column": "age"}, clock.time(), 0.9)
    assert evaluate(store, cfg, clock.time()).notifications == 1


def _row(store: Store) -> NotificationRecord:
    with store.session() as s:
        return s.scalars(select(NotificationRecord)).one()


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff_s(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert backoff_s(50) == 300


def test_three_5xx_then_success_is_delivered_once(
    store: Store, webhook: CollectingReceiver, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    cfg = _config(tmp_path, webhook.url)
    webhook.script = [500, 502, 503]
    _fire(store, cfg, clock)
    statuses = []
    for _ in range(8):
        statuses += [o.status for o in deliver_due(store, cfg.receivers, clock)]
        clock.advance(1)
    assert statuses == ["pending", "pending", "pending", "delivered"]
    assert [r.status for r in webhook.received] == [500, 502, 503, 200]
    assert len({r.headers["Idempotency-Key"] for r in webhook.received}) == 1
    body = webhook.delivered[0].body
    assert body["version"] == "4" and body["alerts"][0]["labels"]["column"] == "age"
    row = _row(store)
    assert (row.status, row.attempts, row.last_error) == ("delivered", 4, None)


def test_receiver_down_for_a_while_gets_it_when_back(
    store: Store, webhook: CollectingReceiver, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    cfg = _config(tmp_path, webhook.url)
    webhook.stop()
    _fire(store, cfg, clock)
    for _ in range(6):  # an hour and a bit of refused connections, backing off
        for outcome in deliver_due(store, cfg.receivers, clock):
            assert outcome.status == "pending" and "cannot reach" in outcome.detail
        clock.advance(600)
    assert _row(store).attempts == 6
    webhook.start()
    deliver_due(store, cfg.receivers, clock)
    assert len(webhook.delivered) == 1
    assert _row(store).status == "delivered"


def test_4xx_is_not_retried_and_the_reason_is_kept(
    store: Store, webhook: CollectingReceiver, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    cfg = _config(tmp_path, webhook.url)
    webhook.script = [400]
    _fire(store, cfg, clock)
    [outcome] = deliver_due(store, cfg.receivers, clock)
    assert outcome.status == "failed"
    clock.advance(3600)
    assert deliver_due(store, cfg.receivers, clock) == []
    assert len(webhook.received) == 1
    row = _row(store)
    assert row.status == "failed" and row.last_error is not None and "HTTP 400" in row.last_error


def test_a_timeout_is_retried(store: Store, webhook: CollectingReceiver, tmp_path: Path) -> None:
    clock = FakeClock(T0)
    cfg = _config(tmp_path, webhook.url)
    webhook.script = ["hang"]
    _fire(store, cfg, clock)
    [outcome] = deliver_due(store, cfg.receivers, clock)
    assert outcome.status == "pending" and "timed out" in outcome.detail
    webhook.release.set()
    clock.advance(1)
    [outcome] = deliver_due(store, cfg.receivers, clock)
    assert outcome.status == "delivered"


def test_gives_up_a_day_after_it_was_written(
    store: Store, webhook: CollectingReceiver, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    cfg = _config(tmp_path, webhook.url)
    _fire(store, cfg, clock)
    webhook.stop()
    clock.advance(GIVE_UP_AFTER_S)
    [outcome] = deliver_due(store, cfg.receivers, clock)
    assert outcome.status == "failed"
    assert "gave up after 1 attempts" in (_row(store).last_error or "")


@pytest.mark.parametrize("kind", ["slack", "alertmanager"])
def test_slack_and_alertmanager_bodies(
    sqlite_store: Store, webhook: CollectingReceiver, tmp_path: Path, kind: str
) -> None:
    clock = FakeClock(T0)
    cfg = _config(tmp_path, webhook.url, kind)
    _fire(sqlite_store, cfg, clock)
    deliver_due(sqlite_store, cfg.receivers, clock)
    [got] = webhook.delivered
    if kind == "slack":
        assert got.path == "/hook" and got.body["text"].startswith("[FIRING]")
    else:
        assert got.path == "/hook/api/v2/alerts"
        assert got.body[0]["labels"]["alertname"] == "Drift" and "endsAt" not in got.body[0]


def test_log_receiver_appends_json_lines(sqlite_store: Store, tmp_path: Path) -> None:
    clock = FakeClock(T0)
    cfg = build_config(
        {
            "defaults": {r.name: False for r in default_rules()},
            "route": {"group_wait": 0},
            "rules": [{"name": "Drift", "metric": "drift", "threshold": 0.5}],
        },
        home=tmp_path,
    )
    _fire(sqlite_store, cfg, clock)
    [outcome] = deliver_due(sqlite_store, cfg.receivers, clock)
    assert outcome.status == "delivered"
    lines = (tmp_path / "logs" / "alerts.log").read_text().splitlines()
    assert len(lines) == 1 and '"alertname": "Drift"' in lines[0]


def test_two_senders_at_once_send_each_notification_once(
    store: Store, webhook: CollectingReceiver, tmp_path: Path
) -> None:
    import threading

    cfg = _config(tmp_path, webhook.url)
    with store.session() as s:
        s.add_all(
            NotificationRecord(
                idempotency_key=f"key-{i}",
                receiver="hook",
                group_key=f"g{i}",
                payload={"alerts": []},
                status="pending",
                attempts=0,
                created_at=T0,
                next_attempt_at=T0,
            )
            for i in range(20)
        )
    clock = FakeClock(T0)
    start = threading.Barrier(2)

    def sender() -> None:
        start.wait()
        deliver_due(store, cfg.receivers, clock, limit=5)
        deliver_due(store, cfg.receivers, clock, limit=5)

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    keys = [r.headers["Idempotency-Key"] for r in webhook.received]
    assert len(keys) == 20 and len(set(keys)) == 20


def _rows(store: Store, receivers: list[str], count: int) -> None:
    with store.session() as s:
        s.add_all(
            NotificationRecord(
                idempotency_key=f"{name}-{i}", receiver=name, group_key=f"{name}{i}",
                payload={"alerts": []}, status="pending", attempts=0, created_at=T0 + i,
                next_attempt_at=T0,
            )
            for name in receivers
            for i in range(count)
        )  # fmt: skip


def _two_receivers(tmp_path: Path, slow_url: str, fast_url: str) -> AlertingConfig:
    return build_config(
        {
            "route": {"receiver": "slow"},
            "receivers": [
                {"name": "slow", "type": "webhook", "url": slow_url, "timeout": "2s"},
                {"name": "fast", "type": "webhook", "url": fast_url, "timeout": "2s"},
            ],
        },
        home=tmp_path,
    )


def test_a_hung_receiver_delays_neither_another_receiver_nor_its_own_other_rows(
    sqlite_store: Store, webhook: CollectingReceiver, tmp_path: Path
) -> None:
    fast = CollectingReceiver().start()
    try:
        cfg = _two_receivers(tmp_path, webhook.url, fast.url)
        webhook.script = ["hang"]
        _rows(sqlite_store, ["slow", "fast"], 3)
        clock = FakeClock(T0)
        started = time.monotonic()
        outcomes = deliver_due(sqlite_store, cfg.receivers, clock)
        took = time.monotonic() - started
        # the slow receiver: one attempt, timed out, its two other rows wait for the retry
        slow = [o for o in outcomes if o.receiver == "slow"]
        assert [(o.status, o.attempts) for o in slow] == [("pending", 1)]
        assert len(webhook.received) == 1 and took < 2 + 0.5 + 2  # one timeout, not three
        assert [o.status for o in outcomes if o.receiver == "fast"] == ["delivered"] * 3
        assert fast.delivered and max(r.at for r in fast.delivered) - started < 1.5
        with sqlite_store.session() as s:
            waiting = s.scalars(
                select(NotificationRecord).where(NotificationRecord.receiver == "slow")
            ).all()
        assert {(r.next_attempt_at, r.claimed_by) for r in waiting} == {(T0 + 1, None)}
        webhook.release.set()
        clock.advance(1)
        assert [o.status for o in deliver_due(sqlite_store, cfg.receivers, clock)] == [
            "delivered"
        ] * 3
    finally:
        fast.stop()


def test_an_attempt_ends_within_its_deadline_even_if_every_read_gets_a_byte(
    sqlite_store: Store, webhook: CollectingReceiver, tmp_path: Path
) -> None:
    cfg = _config(tmp_path, webhook.url)  # timeout 1 s
    webhook.script = ["trickle"]
    _fire(sqlite_store, cfg, FakeClock(T0))
    started = time.monotonic()
    [outcome] = deliver_due(sqlite_store, cfg.receivers, FakeClock(T0))
    assert time.monotonic() - started < 1 + DEADLINE_GRACE_S + 0.5
    assert outcome.status == "pending" and "no answer within 1s" in outcome.detail


def test_the_send_window_shortens_the_deadline_and_a_closed_window_sends_nothing(
    sqlite_store: Store, tmp_path: Path
) -> None:
    cfg = _config(tmp_path, "http://127.0.0.1:9/hook", receiver_type="webhook")
    _rows(sqlite_store, ["hook"], 2)
    clock = FakeClock(T0)
    deadlines: list[float] = []

    def sender(receiver: Receiver, payload: Mapping[str, Any], key: str) -> Delivery:
        deadlines.append(receiver.timeout_s)
        return Delivery(True, False, "ok")

    assert (
        deliver_due(sqlite_store, cfg.receivers, clock, sender=sender, send_window=lambda: 0.8)
        == []
    )
    with sqlite_store.session() as s:  # released at once: another sender need not wait
        assert set(s.scalars(select(NotificationRecord.claimed_until))) == {None}
    window = 1.2  # the lease left: the 1 s timeout is cut to end within it
    outcomes = deliver_due(
        sqlite_store, cfg.receivers, clock, sender=sender, send_window=lambda: window
    )
    assert [o.status for o in outcomes] == ["delivered", "delivered"]
    assert deadlines == [pytest.approx(window - DEADLINE_GRACE_S)] * 2
