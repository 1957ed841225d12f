"""Alert states as timelines on a fake clock: inactive → pending → firing → resolved."""

from __future__ import annotations

from alerting_testkit import write_point
from sqlalchemy import select

from shipyard.alerting.rules import Rule
from shipyard.alerting.state import RESOLVED_RETENTION_S, Transition, apply_rules
from shipyard.clock import FakeClock
from shipyard.store import Store
from shipyard.store.alerting import AlertRecord

T0 = 1_700_000_000.0


def _step(store: Store, rules: list[Rule], now: float) -> list[Transition]:
    with store.session(immediate=True) as s:
        return apply_rules(s, rules, now)


def _states(store: Store) -> dict[str, str]:
    with store.session() as s:
        return {r.labels["column"]: r.state for r in s.scalars(select(AlertRecord))}


def _high(store: Store, t: float, value: float = 0.9) -> None:
    write_point(store, "drift", {"column": "age"}, t, value)


RULE = Rule(
    "Drift",
    "threshold",
    "drift",
    threshold=0.5,
    for_s=60,
    lookback_s=30,
    annotations={"summary": "drift {{ $value }} on {{ $labels.column }}"},
)


class TestLifecycle:
    def test_pending_then_firing_after_for_then_resolved(self, sqlite_store: Store) -> None:
        clock = FakeClock(T0)
        _high(sqlite_store, clock.time())
        assert [(t.old, t.new) for t in _step(sqlite_store, [RULE], clock.time())] == [
            ("inactive", "pending")
        ]
        clock.advance(30)
        _high(sqlite_store, clock.time())
        assert _step(sqlite_store, [RULE], clock.time()) == []
        assert _states(sqlite_store) == {"age": "pending"}
        clock.advance(30)  # now − active_at = 60 = for
        _high(sqlite_store, clock.time())
        assert [(t.old, t.new) for t in _step(sqlite_store, [RULE], clock.time())] == [
            ("pending", "firing")
        ]
        clock.advance(31)  # the newest point is now older than the lookback: condition false
        assert [(t.old, t.new) for t in _step(sqlite_store, [RULE], clock.time())] == [
            ("firing", "resolved")
        ]
        with sqlite_store.session() as s:
            record = s.scalars(select(AlertRecord)).one()
        assert record.fired_at == T0 + 60
        assert record.resolved_at == T0 + 91
        assert record.annotations["summary"] == "drift 0.9 on age"

    def test_for_zero_fires_at_once(self, sqlite_store: Store) -> None:
        rule = Rule("Drift", "threshold", "drift", threshold=0.5)
        _high(sqlite_store, T0)
        changes = _step(sqlite_store, [rule], T0)
        assert [(t.old, t.new) for t in changes] == [("inactive", "pending"), ("pending", "firing")]

    def test_pending_that_clears_is_dropped_without_firing(self, sqlite_store: Store) -> None:
        _high(sqlite_store, T0)
        _step(sqlite_store, [RULE], T0)
        _high(sqlite_store, T0 + 10, value=0.1)
        changes = _step(sqlite_store, [RULE], T0 + 10)
        assert [(t.old, t.new) for t in changes] == [("pending", "inactive")]
        assert _states(sqlite_store) == {}

    def test_keep_firing_for_holds_a_flapping_alert(self, sqlite_store: Store) -> None:
        rule = Rule(
            "Drift", "threshold", "drift", threshold=0.5, keep_firing_for_s=120, lookback_s=30
        )
        _high(sqlite_store, T0)
        _step(sqlite_store, [rule], T0)
        _high(sqlite_store, T0 + 10, value=0.1)
        assert _step(sqlite_store, [rule], T0 + 10) == []
        assert _step(sqlite_store, [rule], T0 + 119) == []
        assert _states(sqlite_store) == {"age": "firing"}
        changes = _step(sqlite_store, [rule], T0 + 120)
        assert [(t.old, t.new) for t in changes] == [("firing", "resolved")]

    def test_resolved_alert_fires_again_as_new_pending(self, sqlite_store: Store) -> None:
        rule = Rule("Drift", "threshold", "drift", threshold=0.5, lookback_s=5)
        _high(sqlite_store, T0)
        _step(sqlite_store, [rule], T0)
        _step(sqlite_store, [rule], T0 + 10)
        _high(sqlite_store, T0 + 20)
        changes = _step(sqlite_store, [rule], T0 + 20)
        assert [(t.old, t.new) for t in changes] == [("resolved", "pending"), ("pending", "firing")]

    def test_resolved_alerts_are_forgotten_after_retention(self, sqlite_store: Store) -> None:
        rule = Rule("Drift", "threshold", "drift", threshold=0.5, lookback_s=5)
        _high(sqlite_store, T0)
        _step(sqlite_store, [rule], T0)
        _step(sqlite_store, [rule], T0 + 10)
        _step(sqlite_store, [rule], T0 + 10 + RESOLVED_RETENTION_S)
        assert _states(sqlite_store) == {"age": "resolved"}
        _step(sqlite_store, [rule], T0 + 11 + RESOLVED_RETENTION_S)
        assert _states(sqlite_store) == {}

    def test_switching_a_rule_off_resolves_its_alerts(self, sqlite_store: Store) -> None:
        rule = Rule("Drift", "threshold", "drift", threshold=0.5)
        _high(sqlite_store, T0)
        _step(sqlite_store, [rule], T0)
        changes = _step(sqlite_store, [], T0 + 1)
        assert [(t.old, t.new) for t in changes] == [("firing", "resolved")]

    def test_states_survive_a_new_store_object(self, sqlite_store: Store) -> None:
        _high(sqlite_store, T0)
        _step(sqlite_store, [RULE], T0)
        reopened = Store(sqlite_store.url)
        try:
            _high(reopened, T0 + 60)
            changes = _step(reopened, [RULE], T0 + 60)
        finally:
            reopened.dispose()
        assert [(t.old, t.new) for t in changes] == [("pending", "firing")]
