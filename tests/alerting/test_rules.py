"""Rule evaluation over real metric series (SQLite and PostgreSQL), checked against numpy/scipy
and the SRE workbook's burn-rate table."""

from __future__ import annotations

import math

import pytest
from alerting_testkit import write_point, write_points
from scipy import stats

from shipyard.alerting.matchers import Matcher
from shipyard.alerting.rules import (
    PAGE_WINDOWS,
    TICKET_WINDOWS,
    Rule,
    counter_increase,
    evaluate_rule,
    fingerprint,
    format_duration,
    parse_duration,
    time_to_exhaustion,
)
from shipyard.errors import InvalidInput
from shipyard.store import Store

T0 = 1_700_000_000.0


class TestDurations:
    def test_prometheus_units_parse_to_seconds(self) -> None:
        assert [parse_duration(d) for d in ("500ms", "30s", "5m", "4h", "3d", "1w", 7)] == [
            0.5,
            30,
            300,
            14400,
            259200,
            604800,
            7,
        ]

    def test_bad_duration_is_a_clear_error(self) -> None:
        with pytest.raises(InvalidInput, match="bad duration"):
            parse_duration("5 minutes")
        with pytest.raises(InvalidInput, match="negative"):
            parse_duration(-1)

    def test_format_round_trips(self) -> None:
        for text in ("30s", "5m", "1h", "6h", "3d", "1w", "90s"):
            assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


def test_fingerprint_depends_on_labels_not_their_order() -> None:
    assert fingerprint({"a": "1", "b": "2"}) == fingerprint({"b": "2", "a": "1"})
    assert fingerprint({"a": "1"}) != fingerprint({"a": "2"})
    assert len(fingerprint({})) == 16


class TestThreshold:
    def test_newest_point_per_series_is_compared(self, store: Store) -> None:
        rule = Rule("Drift", "threshold", "drift", threshold=0.2, lookback_s=60)
        write_point(store, "drift", {"column": "age"}, T0 - 10, 0.5)
        write_point(store, "drift", {"column": "age"}, T0 - 5, 0.1)  # recovered
        write_point(store, "drift", {"column": "income"}, T0 - 5, 0.3)
        with store.session() as s:
            hits = evaluate_rule(s, rule, T0)
        assert [(h.labels["column"], h.value) for h in hits] == [("income", 0.3)]
        assert hits[0].labels["alertname"] == "Drift"

    def test_points_older_than_lookback_do_not_count(self, store: Store) -> None:
        rule = Rule("Drift", "threshold", "drift", threshold=0.2, lookback_s=60)
        write_point(store, "drift", {"column": "age"}, T0 - 61, 0.9)
        with store.session() as s:
            assert evaluate_rule(s, rule, T0) == []

    def test_matchers_select_series(self, store: Store) -> None:
        rule = Rule(
            "Slow",
            "threshold",
            "lat",
            op=">=",
            threshold=1,
            matchers=(Matcher("model", "a|b", is_regex=True),),
        )
        for model in ("a", "b", "c"):
            write_point(store, "lat", {"model": model}, T0 - 1, 1.0)
        with store.session() as s:
            assert sorted(h.labels["model"] for h in evaluate_rule(s, rule, T0)) == ["a", "b"]


class TestAbsence:
    def test_fires_when_no_point_within_lookback(self, store: Store) -> None:
        rule = Rule(
            "Outage", "absence", "up", matchers=(Matcher("model", "churn"),), lookback_s=120
        )
        write_point(store, "up", {"model": "churn"}, T0, 1)
        with store.session() as s:
            assert evaluate_rule(s, rule, T0 + 119) == []
            hits = evaluate_rule(s, rule, T0 + 121)
        assert len(hits) == 1
        assert hits[0].labels["model"] == "churn"

    def test_another_series_does_not_hide_the_absence(self, store: Store) -> None:
        rule = Rule(
            "Outage", "absence", "up", matchers=(Matcher("model", "churn"),), lookback_s=120
        )
        write_point(store, "up", {"model": "other"}, T0, 1)
        with store.session() as s:
            assert len(evaluate_rule(s, rule, T0 + 1)) == 1

    def test_per_series_each_series_that_stopped_is_its_own_alert(self, store: Store) -> None:
        """seen_within: a timeline where model b stops reporting at T0+120 and a goes on."""
        rule = Rule("Silent", "absence", "up", lookback_s=120, seen_within_s=3600)
        for t in range(0, 4000, 60):
            write_point(store, "up", {"model": "a"}, T0 + t, 1)
            if t <= 120:
                write_point(store, "up", {"model": "b"}, T0 + t, 1)
        with store.session() as s:
            assert evaluate_rule(s, rule, T0 + 200) == []  # b's last point is 80 s old
            (hit,) = evaluate_rule(s, rule, T0 + 250)
            assert hit.labels == {"model": "b", "alertname": "Silent", "severity": "warning"}
            assert hit.value == 130  # seconds since b's last point
            # an hour later b is forgotten (it was retired, not broken); c never existed
            assert evaluate_rule(s, rule, T0 + 120 + 3601) == []

    def test_seen_within_is_only_for_absence_and_longer_than_the_lookback(self) -> None:
        with pytest.raises(InvalidInput, match="seen_within"):
            Rule("X", "threshold", "up", seen_within_s=3600)
        with pytest.raises(InvalidInput, match="seen_within"):
            Rule("X", "absence", "up", lookback_s=600, seen_within_s=600)


class TestCounters:
    def test_increase_counts_a_reset_as_growth_from_zero(self) -> None:
        ts = [0.0, 10, 20, 30, 40]
        values = [100.0, 110, 5, 15, 15]
        assert counter_increase(ts, values, 0, 40) == 10 + 5 + 10 + 0
        assert counter_increase(ts, values, 15, 40) == 5 + 10

    def test_time_to_exhaustion_matches_a_least_squares_line(self) -> None:
        ts = [0.0, 60, 120, 180, 240]
        values = [0.50, 0.52, 0.55, 0.56, 0.60]
        fit = stats.linregress(ts, values)
        now_value = fit.intercept + fit.slope * 240
        expected = (1.0 - now_value) / fit.slope
        assert time_to_exhaustion(ts, values, 1.0) == pytest.approx(expected, rel=1e-9)
        assert time_to_exhaustion(ts, [0.6, 0.5, 0.4, 0.3, 0.2], 1.0) == math.inf
        assert time_to_exhaustion(ts, [1.0, 1.1, 1.2, 1.3, 1.4], 1.0) == 0.0


def _traffic(store: Store, start: float, end: float, error_ratio: float, step: float = 60) -> None:
    """Counters growing by 1000 requests per step with ``error_ratio`` of them errors."""
    requests = errors = 0.0
    t = start
    points = []
    while t <= end:
        points += [
            ("req_total", {"model": "m"}, t, requests),
            ("err_total", {"model": "m"}, t, errors),
        ]
        requests += 1000
        errors += 1000 * error_ratio
        t += step
    write_points(store, points)


class TestBurnRate:
    def test_workbook_factors(self) -> None:
        # 2 % of a 30-day budget in 1 h → 0.02 × 720 / 1 = 14.4; 5 % in 6 h → 6; 10 % in 3 d → 1.
        assert [w.factor for w in PAGE_WINDOWS] == [
            pytest.approx(0.02 * 720 / 1),
            pytest.approx(0.05 * 720 / 6),
        ]
        assert TICKET_WINDOWS[0].factor == pytest.approx(0.10 * 720 / 72)

    def _rule(self, windows: tuple = PAGE_WINDOWS) -> Rule:
        return Rule(
            "Burn",
            "burn_rate",
            "req_total",
            error_metric="err_total",
            objective=0.999,
            windows=windows,
            severity="page",
        )

    @pytest.mark.parametrize(
        ("ratio", "fires"), [(0.0144 * 1.1, True), (0.0144 * 0.9, False), (0.0, False)]
    )
    def test_page_fires_above_14_4_times_budget(
        self, store: Store, ratio: float, fires: bool
    ) -> None:
        _traffic(store, T0 - 3 * 3600, T0, ratio)
        with store.session() as s:
            hits = evaluate_rule(s, self._rule((PAGE_WINDOWS[0],)), T0)
        assert bool(hits) is fires
        if fires:
            assert hits[0].value == pytest.approx(ratio / 0.001, rel=1e-6)

    def test_short_window_must_also_burn(self, store: Store) -> None:
        # An hour at 2 % errors that stopped 10 minutes ago: the 1 h window still burns,
        # the 5 min window does not, so the page does not fire (the workbook's reset time).
        requests = errors = 0.0
        points = []
        for minute in range(-70, 1):
            points.append(("req_total", {"model": "m"}, T0 + 60 * minute, requests))
            points.append(("err_total", {"model": "m"}, T0 + 60 * minute, errors))
            requests += 1000
            errors += 20 if minute < -10 else 0
        write_points(store, points)
        with store.session() as s:
            assert evaluate_rule(s, self._rule((PAGE_WINDOWS[0],)), T0) == []
            assert len(evaluate_rule(s, self._rule((PAGE_WINDOWS[0],)), T0 - 11 * 60)) == 1

    def test_slow_burn_fires_the_six_hour_pair_only(self, store: Store) -> None:
        _traffic(store, T0 - 7 * 3600, T0, 0.008)  # 8× budget: above 6, below 14.4
        with store.session() as s:
            assert evaluate_rule(s, self._rule((PAGE_WINDOWS[0],)), T0) == []
            assert len(evaluate_rule(s, self._rule(PAGE_WINDOWS), T0)) == 1


class TestForecast:
    def test_fires_when_exhaustion_within_horizon(self, store: Store) -> None:
        rule = Rule("Quota", "forecast", "used", threshold=1.0, horizon_s=3600, lookback_s=1800)
        for i in range(7):  # +0.05 every 5 minutes: 0.6 → 0.9, so 1.0 in 10 minutes
            write_point(store, "used", {"pool": "gpu"}, T0 - 1800 + 300 * i, 0.6 + 0.05 * i)
        with store.session() as s:
            hits = evaluate_rule(s, rule, T0)
            assert len(hits) == 1
            assert hits[0].value == pytest.approx(600, rel=1e-6)
            far = Rule("Quota", "forecast", "used", threshold=1.0, horizon_s=300, lookback_s=1800)
            assert evaluate_rule(s, far, T0) == []


def test_burn_rate_rule_without_windows_is_refused() -> None:
    with pytest.raises(InvalidInput, match="burn_rate needs"):
        Rule("B", "burn_rate", "req_total")
