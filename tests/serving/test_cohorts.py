"""Canary cohorts drawn afresh per rollout: monotone in the weight within a rollout, independent
across rollouts, recent canary users kept out without a user table, targeted by header/cookie."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipyard.serving.routing import (
    Cohort,
    Match,
    asgi_headers,
    choose_version,
    cohort_bucket,
    cookie_value,
    in_canary,
)

KEYS = [f"user:{i}" for i in range(10_000)]
IDS = st.text(alphabet="0123456789abcdef", min_size=1, max_size=12)
WEIGHTS = st.lists(st.floats(0.01, 99.99), min_size=2, max_size=6)


def _share(cohort: Cohort, weight: float, keys: list[str] = KEYS) -> float:
    return sum(in_canary(k, weight, cohort) for k in keys) / len(keys)


class TestWithinOneRollout:
    @given(
        model=st.text(min_size=1, max_size=20),
        rollout=IDS,
        weights=WEIGHTS,
        excluded=st.lists(st.tuples(IDS, st.floats(0, 60)), max_size=3),
        keys=st.lists(st.text(max_size=30), min_size=1, max_size=200),
    )
    @settings(max_examples=60, deadline=None)
    def test_users_only_move_from_stable_to_canary_as_the_weight_grows(
        self,
        model: str,
        rollout: str,
        weights: list[float],
        excluded: list[tuple[str, float]],
        keys: list[str],
    ) -> None:
        cohort = Cohort(model, rollout, excluded=tuple(excluded))
        before: set[str] = set()
        for w in sorted(weights):
            now = {k for k in keys if in_canary(k, w, cohort)}
            assert before <= now, f"someone left the canary when the weight grew to {w}"
            before = now

    @given(rollout=IDS, weight=st.sampled_from([1.0, 10.0, 50.0]))
    @settings(max_examples=4, deadline=None)
    def test_canary_share_is_close_to_its_weight(self, rollout: str, weight: float) -> None:
        # binomial standard error at n = 10 000 is at most 0.005; allow 4 of them
        assert abs(_share(Cohort("churn", rollout), weight) - weight / 100) < 0.02


class TestAcrossRollouts:
    @given(
        first=IDS,
        second=IDS,
        a=st.sampled_from([5.0, 10.0, 30.0]),
        b=st.sampled_from([10.0, 50.0]),
    )
    @settings(max_examples=5, deadline=None)
    def test_two_rollouts_draw_independent_cohorts(
        self, first: str, second: str, a: float, b: float
    ) -> None:
        """The overlap of two cohorts is the product of their shares (10 % × 10 % ≈ 1 %), not
        the smaller share, as a bucket of the user alone made it."""
        if first == second:
            second = first + "x"
        one = [in_canary(k, a, Cohort("churn", first)) for k in KEYS]
        two = [in_canary(k, b, Cohort("churn", second)) for k in KEYS]
        both = sum(x and y for x, y in zip(one, two, strict=True)) / len(KEYS)
        expected = a * b / 10_000
        se = math.sqrt(expected * (1 - expected) / len(KEYS))
        assert abs(both - expected) < 5 * se + 1e-3

    def test_two_models_rolled_out_at_once_do_not_share_a_cohort(self) -> None:
        one = {k for k in KEYS if in_canary(k, 10, Cohort("churn", "r1"))}
        two = {k for k in KEYS if in_canary(k, 10, Cohort("fraud", "r1"))}
        assert len(one & two) / len(KEYS) < 0.02

    def test_the_salt_cannot_be_forged_by_moving_characters_between_fields(self) -> None:
        assert cohort_bucket("a", "bc", "user:1") != cohort_bucket("ab", "c", "user:1")


class TestExclusion:
    def test_recent_canary_users_are_kept_out_and_the_share_is_kept(self) -> None:
        earlier = [Cohort("churn", "r1"), Cohort("churn", "r2")]
        were_in = {k for k in KEYS if any(in_canary(k, 10, c) for c in earlier)}
        now = Cohort("churn", "r3", excluded=(("r1", 10.0), ("r2", 10.0)))
        assert now.eligible == pytest.approx(0.81)
        got = {k for k in KEYS if in_canary(k, 10, now)}
        assert not got & were_in
        assert abs(len(got) / len(KEYS) - 0.10) < 0.02  # the weight still means the share
        assert all(now.was_in_recent_canary(k) for k in were_in)  # recomputed, no user table

    def test_past_the_eligible_share_excluded_users_come_in_last(self) -> None:
        now = Cohort("churn", "r2", excluded=(("r1", 40.0),))
        eligible = [k for k in KEYS if not now.was_in_recent_canary(k)]
        assert all(in_canary(k, 70, now) for k in eligible)  # 70 % > 60 % eligible: all in
        assert abs(_share(now, 70) - 0.70) < 0.02

    def test_a_rollout_that_excluded_users_is_excluded_up_to_its_scaled_threshold(self) -> None:
        earlier = Cohort("churn", "r2", excluded=(("r1", 20.0),))
        exposure = earlier.exposure_pct(10)
        later = Cohort("churn", "r3", excluded=(("r2", exposure),))
        assert not any(in_canary(k, 10, earlier) and in_canary(k, 5, later) for k in KEYS)

    def test_a_malformed_exclusion_is_refused(self) -> None:
        with pytest.raises(ValueError, match="threshold"):
            Cohort("churn", "r2", excluded=(("r1", 100.0),))
        with pytest.raises(ValueError, match="at most"):
            Cohort("churn", "r2", excluded=tuple((f"r{i}", 1.0) for i in range(17)))


class TestTargets:
    def test_a_header_match_routes_to_the_canary_whatever_the_bucket(self) -> None:
        cohort = Cohort("churn", "r1", targets=(Match("header", "X-Region", ("eu", "uk")),))
        split = {1: 100.0, 2: 0.0}
        eu = asgi_headers({"x-region": "eu"})
        assert all(choose_version(k, split, 2, cohort, eu) == 2 for k in KEYS[:200])
        us = asgi_headers({"X-Region": "us"})
        assert all(choose_version(k, split, 2, cohort, us) == 1 for k in KEYS[:200])
        assert all(choose_version(k, split, 2, cohort, None) == 1 for k in KEYS[:200])

    def test_a_cookie_match_reads_the_cookie_header(self) -> None:
        headers = asgi_headers({"Cookie": 'session=abc; beta="1"; theme=dark'})
        assert cookie_value(headers, "beta") == "1"
        assert cookie_value(headers, "missing") is None
        assert Match("cookie", "beta", ("1",)).matches(headers)
        assert not Match("cookie", "theme", ("light",)).matches(headers)

    def test_a_malformed_match_is_refused(self) -> None:
        with pytest.raises(ValueError, match="token"):
            Match("header", "x region", ("eu",))
        with pytest.raises(ValueError, match="value"):
            Match("cookie", "beta", ())
        with pytest.raises(ValueError, match="header or a cookie"):
            Match("query", "beta", ("1",))

    def test_a_cohort_survives_its_json_round_trip(self) -> None:
        cohort = Cohort("m", "r9", (Match("cookie", "beta", ("1",)),), (("r1", 12.5),))
        assert Cohort.from_json(cohort.to_json()) == cohort
