"""Routing, grouping, silences and inhibition as timelines on a fake clock.

Each step runs one real cycle (rules → states → groups → outbox rows) against SQLite and reads
what the outbox holds, as Alertmanager's acceptance tests read a collecting webhook.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alerting_testkit import write_point
from sqlalchemy import select

from shipyard.alerting.config import AlertingConfig, build_config
from shipyard.alerting.cycle import evaluate
from shipyard.alerting.grouping import Route, routes_for
from shipyard.alerting.matchers import Matcher
from shipyard.alerting.silences import create_silence, expire_silence
from shipyard.errors import InvalidInput
from shipyard.store import Store
from shipyard.store.alerting import NotificationRecord

T0 = 1_700_000_000.0


def _config(tmp_path: Path, **route: Any) -> AlertingConfig:
    return build_config(
        {
            "route": {
                "receiver": "team",
                "group_by": ["alertname"],
                "group_wait": "30s",
                "group_interval": "5m",
                "repeat_interval": "4h",
                **route,
            },
            "receivers": [
                {"name": "team", "type": "webhook", "url": "http://127.0.0.1:9/h"},
                {"name": "oncall", "type": "webhook", "url": "http://127.0.0.1:9/o"},
            ],
            "defaults": {name: False for name in _default_names()},
            "rules": [
                {
                    "name": "Drift",
                    "metric": "drift",
                    "threshold": 0.5,
                    "lookback": "10m",
                    "severity": "ticket",
                },
                {
                    "name": "Drift",
                    "metric": "drift",
                    "threshold": 0.8,
                    "lookback": "10m",
                    "severity": "page",
                },
            ],
        },
        home=tmp_path,
    )


def _default_names() -> list[str]:
    from shipyard.alerting.defaults import default_rules

    return sorted({r.name for r in default_rules()})


def _sent(store: Store) -> list[NotificationRecord]:
    with store.session() as s:
        return list(s.scalars(select(NotificationRecord).order_by(NotificationRecord.created_at)))


def _drift(store: Store, column: str, t: float, value: float = 0.6) -> None:
    write_point(store, "drift", {"column": column}, t, value)


def _firing(n: NotificationRecord) -> list[str]:
    return sorted(a["labels"]["column"] for a in n.payload["alerts"] if a["status"] == "firing")


class TestGroupTimers:
    def test_first_notification_waits_group_wait(self, sqlite_store: Store, tmp_path: Path) -> None:
        cfg = _config(tmp_path)
        _drift(sqlite_store, "age", T0)
        evaluate(sqlite_store, cfg, T0)
        _drift(sqlite_store, "income", T0 + 10)
        evaluate(sqlite_store, cfg, T0 + 10)
        evaluate(sqlite_store, cfg, T0 + 29.9)
        assert _sent(sqlite_store) == []
        evaluate(sqlite_store, cfg, T0 + 30)
        [first] = _sent(sqlite_store)
        assert _firing(first) == ["age", "income"]  # both waited in one group
        assert first.payload["groupKey"] == 'team:{alertname="Drift"}'
        assert first.payload["version"] == "4"
        assert first.payload["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"

    def test_alert_resolved_within_group_wait_is_never_sent(
        self, sqlite_store: Store, tmp_path: Path
    ) -> None:
        cfg = _config(tmp_path)
        _drift(sqlite_store, "age", T0)
        evaluate(sqlite_store, cfg, T0)
        _drift(sqlite_store, "age", T0 + 5, value=0.1)
        for t in (5, 30, 60, 400):
            evaluate(sqlite_store, cfg, T0 + t)
        assert _sent(sqlite_store) == []

    def test_changes_wait_group_interval(self, sqlite_store: Store, tmp_path: Path) -> None:
        cfg = _config(tmp_path, group_wait="0s")
        _drift(sqlite_store, "age", T0)
        evaluate(sqlite_store, cfg, T0)
        _drift(sqlite_store, "income", T0 + 60)
        evaluate(sqlite_store, cfg, T0 + 60)
        evaluate(sqlite_store, cfg, T0 + 299)
        assert len(_sent(sqlite_store)) == 1
        evaluate(sqlite_store, cfg, T0 + 300)
        sent = _sent(sqlite_store)
        assert [_firing(n) for n in sent] == [["age"], ["age", "income"]]

    def test_unchanged_group_repeats_after_repeat_interval(
        self, sqlite_store: Store, tmp_path: Path
    ) -> None:
        cfg = _config(tmp_path, group_wait="0s", repeat_interval="1h")
        for t in range(0, 3601, 300):
            _drift(sqlite_store, "age", T0 + t)
            evaluate(sqlite_store, cfg, T0 + t)
        assert [n.created_at - T0 for n in _sent(sqlite_store)] == [0, 3600]

    def test_resolution_is_sent_after_group_interval(
        self, sqlite_store: Store, tmp_path: Path
    ) -> None:
        cfg = _config(tmp_path, group_wait="0s", group_interval="1m")
        _drift(sqlite_store, "age", T0)
        evaluate(sqlite_store, cfg, T0)
        _drift(sqlite_store, "age", T0 + 10, value=0.1)
        evaluate(sqlite_store, cfg, T0 + 10)
        evaluate(sqlite_store, cfg, T0 + 59)
        assert len(_sent(sqlite_store)) == 1
        evaluate(sqlite_store, cfg, T0 + 60)
        evaluate(sqlite_store, cfg, T0 + 3600 * 5)  # nothing left to repeat
        sent = _sent(sqlite_store)
        assert [n.payload["status"] for n in sent] == ["firing", "resolved"]
        resolved = sent[1].payload["alerts"][0]
        assert resolved["status"] == "resolved"
        assert resolved["endsAt"].startswith("2023-11-14T22:13:30")


class TestRouting:
    def test_first_matching_child_wins_unless_continue(self) -> None:
        page = Route("oncall", (Matcher("severity", "page"),))
        also = Route("audit", (Matcher("severity", "page"),), continue_=True)
        root = Route("team", routes=(also, page))
        assert [r.receiver for r in routes_for(root, {"severity": "page"})] == ["audit", "oncall"]
        assert [r.receiver for r in routes_for(root, {"severity": "ticket"})] == ["team"]

    def test_children_inherit_timers(self, tmp_path: Path) -> None:
        cfg = _config(tmp_path, routes=[{"matchers": ['severity="page"'], "receiver": "oncall"}])
        child = cfg.route.routes[0]
        assert (child.group_wait_s, child.repeat_interval_s) == (30, 4 * 3600)

    def test_unknown_receiver_in_route_is_refused(self, tmp_path: Path) -> None:
        from shipyard.errors import ConfigError

        with pytest.raises(ConfigError, match="receiver 'nobody'"):
            _config(tmp_path, receiver="nobody")


class TestSilences:
    def test_silenced_alert_is_not_sent_until_silence_ends(
        self, sqlite_store: Store, tmp_path: Path
    ) -> None:
        cfg = _config(tmp_path, group_wait="0s")
        with sqlite_store.session() as s:
            silence = create_silence(
                s,
                [Matcher("column", "age")],
                starts_at=T0,
                ends_at=T0 + 600,
                created_by="ana",
                comment="known backfill",
                now=T0,
            )
        for t in (0, 300, 599):
            _drift(sqlite_store, "age", T0 + t)
            evaluate(sqlite_store, cfg, T0 + t)
        assert _sent(sqlite_store) == []
        _drift(sqlite_store, "age", T0 + 600)
        evaluate(sqlite_store, cfg, T0 + 600)
        assert [_firing(n) for n in _sent(sqlite_store)] == [["age"]]
        with sqlite_store.session() as s:
            assert expire_silence(s, silence.id, actor="ana", now=T0 + 601).ends_at == T0 + 600

    def test_silence_mutes_only_what_it_matches(self, sqlite_store: Store, tmp_path: Path) -> None:
        cfg = _config(tmp_path, group_wait="0s")
        with sqlite_store.session() as s:
            create_silence(
                s,
                [Matcher("column", "age")],
                starts_at=T0,
                ends_at=T0 + 600,
                created_by="ana",
                comment="backfill",
                now=T0,
            )
        _drift(sqlite_store, "age", T0)
        _drift(sqlite_store, "income", T0)
        evaluate(sqlite_store, cfg, T0)
        assert [_firing(n) for n in _sent(sqlite_store)] == [["income"]]

    @pytest.mark.parametrize(
        ("matchers", "ends", "comment", "error"),
        [
            ([], 600, "x", "at least one matcher"),
            ([Matcher("column", ".*", is_regex=True)], 600, "x", "match every alert"),
            ([Matcher("column", "age")], -5, "x", "already be over"),
            ([Matcher("column", "age")], 600, " ", "say why"),
        ],
    )
    def test_bad_silences_are_refused(
        self, sqlite_store: Store, matchers: list[Matcher], ends: float, comment: str, error: str
    ) -> None:
        with pytest.raises(InvalidInput, match=error), sqlite_store.session() as s:
            create_silence(
                s,
                matchers,
                starts_at=T0 - 10,
                ends_at=T0 + ends,
                created_by="ana",
                comment=comment,
                now=T0,
            )


class TestInhibition:
    def test_page_mutes_ticket_with_same_labels(self, sqlite_store: Store, tmp_path: Path) -> None:
        cfg = _config(tmp_path, group_wait="0s", group_by=["alertname", "severity"])
        _drift(sqlite_store, "age", T0, value=0.9)  # both the ticket (>0.5) and the page (>0.8)
        _drift(sqlite_store, "income", T0, value=0.6)  # the ticket only
        evaluate(sqlite_store, cfg, T0)
        sent = {n.payload["groupLabels"]["severity"]: _firing(n) for n in _sent(sqlite_store)}
        assert sent == {"page": ["age"], "ticket": ["income"]}

    def test_ticket_is_sent_once_the_page_resolves(
        self, sqlite_store: Store, tmp_path: Path
    ) -> None:
        cfg = _config(
            tmp_path, group_wait="0s", group_interval="1m", group_by=["alertname", "severity"]
        )
        _drift(sqlite_store, "age", T0, value=0.9)
        evaluate(sqlite_store, cfg, T0)
        _drift(sqlite_store, "age", T0 + 60, value=0.6)
        evaluate(sqlite_store, cfg, T0 + 60)
        tickets = [
            n for n in _sent(sqlite_store) if n.payload["groupLabels"]["severity"] == "ticket"
        ]
        assert [_firing(n) for n in tickets] == [["age"]]
