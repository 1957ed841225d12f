"""Delivery from the outbox to a real HTTP receiver on 127.0.0.1, on SQLite and PostgreSQL.

The clock is fake (so backoff is a timeline); the HTTP, the database and the payloads are real.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from alerting_testkit import CollectingReceiver, write_point
from sqlalchemy import select

from shipyard.alerting.config import AlertingConfig, build_config
from shipyard.alerting.cycle import evaluate
from shipyard.alerting.defaults import default_rules
from shipyard.alerting.outbox import GIVE_UP_AFTER_S, backoff_s, deliver_due
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
