"""One error budget for the whole release: every look of every stage (targeted, then weighted
canary steps) spends one alpha, so an A/A release rolls back falsely at most alpha of the time
however many stages it has; the schedule's numbers against closed forms and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from shipyard.deploy.canary import ArmData, judge_arms
from shipyard.deploy.policy import Policy, parse_policy
from shipyard.stats.canary import alpha_at_look, alpha_spent, combine, staged_alpha

STAGED = """
canary:
  interval_s: 60
  steps:
    - {match: {header: x-user-group, values: [internal]}, min_duration_s: 180, min_samples: 0}
    - {weight_pct: 10, min_duration_s: 180, min_samples: 0}
    - {weight_pct: 50, min_duration_s: 180, min_samples: 0}
analysis:
  alpha: 0.1
  metrics:
    - {name: error_rate, threshold: 0}
    - {name: latency_spread, threshold: 0}
    - {name: prediction_shift, threshold: 0}
"""


class TestSchedule:
    @pytest.mark.parametrize("budget", ["release", "per_stage"])
    @pytest.mark.parametrize("kind", ["pocock", "obrien_fleming"])
    def test_every_look_of_every_stage_together_spends_exactly_alpha(
        self, budget: str, kind: str
    ) -> None:
        looks = [1, 4, 2, 3]
        levels = [
            staged_alpha(looks, i, k, 0.01, kind, budget)  # type: ignore[arg-type]
            for i in range(len(looks))
            for k in range(1, looks[i] + 1)
        ]
        assert sum(levels) == pytest.approx(0.01, abs=1e-15)
        assert min(levels) > 0
        assert staged_alpha(looks, 1, 5, 0.01) == 0.0  # past the stage's last look
        assert staged_alpha(looks, 4, 1, 0.01) == 0.0  # no such stage

    def test_one_stage_is_the_single_step_schedule(self) -> None:
        for k in range(1, 6):
            assert staged_alpha([5], 0, k, 0.05) == pytest.approx(alpha_at_look(k, 5, 0.05))

    def test_cumulative_spending_matches_the_lan_demets_closed_forms(self) -> None:
        """Lan & DeMets (1983): Pocock-type α·ln(1 + (e − 1)t), O'Brien–Fleming-type
        2(1 − Φ(z_{1−α/2}/√t)), evaluated with scipy: at t = 1/2 and α = 0.05 the
        OBF-type has spent 0.0056, the Pocock-type 0.031."""
        looks = [2, 2]  # t = 1/2 after the first stage
        spent = {
            kind: sum(staged_alpha(looks, 0, k, 0.05, kind) for k in (1, 2))  # type: ignore[arg-type]
            for kind in ("pocock", "obrien_fleming")
        }
        assert spent["pocock"] == pytest.approx(0.05 * math.log(1 + (math.e - 1) / 2))
        z = sps.norm.isf(0.025)
        assert spent["obrien_fleming"] == pytest.approx(2 * sps.norm.sf(z / math.sqrt(0.5)))
        assert spent["obrien_fleming"] == pytest.approx(0.0056, abs=5e-5)
        assert spent["pocock"] == pytest.approx(0.031, abs=5e-4)
        assert alpha_spent(0.5, 0.05, "obrien_fleming") == spent["obrien_fleming"]

    def test_adding_a_stage_does_not_add_alpha(self) -> None:
        two = parse_policy("canary: {steps: [{weight_pct: 10}, {weight_pct: 50}]}")
        three = parse_policy(
            "canary: {steps: [{match: {cookie: beta, values: ['1']}}, "
            "{weight_pct: 10}, {weight_pct: 50}]}"
        )
        for policy in (two, three):
            assert sum(s.alpha for s in policy.stages()) == pytest.approx(policy.analysis.alpha)

    def test_the_replay_and_every_live_look_together_spend_exactly_alpha(self) -> None:
        """replay → targeted → 10 % → 50 %: the replay's one look per metric, plus every look
        of every live step per metric, times the metrics, is α; no look may spend more."""
        policy = parse_policy(
            "canary: {interval_s: 120, replay: {min_rows: 200}, steps: ["
            "{match: {header: x-user-group, values: [internal]}, min_duration_s: 300}, "
            "{weight_pct: 10, min_duration_s: 300}, {weight_pct: 50, min_duration_s: 300}]}"
        )
        metrics = len(policy.analysis.metrics)
        live = [
            policy.alpha_at(i, k)
            for i, step in enumerate(policy.canary.steps)
            for k in range(1, step.max_looks(policy.canary.interval_s) + 1)
        ]
        assert len(live) == 9 and min(live) > 0
        assert (policy.replay_alpha() + sum(live)) * metrics == pytest.approx(
            policy.analysis.alpha, abs=1e-15
        )
        assert [s.kind for s in policy.stages()] == ["replay", "targeted", "canary", "canary"]
        assert policy.stages()[0].alpha == pytest.approx(policy.replay_alpha() * metrics)
        assert policy.alpha_at(0, 4) == 0.0  # a look past the step's last one can never fail


def _aa_release(policy: Policy, rng: np.random.Generator, *, naive: bool) -> bool:
    """One A/A release: both versions draw from one distribution; every look of every stage on
    cumulative data; True when some look fails (a false rollback)."""
    metrics = len(policy.analysis.metrics)
    for index, stage in enumerate(policy.stages()):
        canary, stable = ArmData(), ArmData()
        for look in range(1, stage.max_looks + 1):
            for arm, n in ((canary, 40), (stable, 160)):
                arm.requests += n
                arm.errors += int(rng.binomial(n, 0.05))
                arm.latencies_ms = np.concatenate([arm.latencies_ms, rng.gamma(4.0, 5.0, n)])
                arm.predictions += rng.integers(0, 3, n).tolist()  # three classes
            verdicts = judge_arms(canary, stable, policy, index, look)
            if naive:  # every look of every stage at the whole level (no budget)
                if any(v.p_value < policy.analysis.alpha / metrics for v in verdicts):
                    return True
                continue
            if combine(verdicts) == "fail":
                return True
    return False


def test_an_aa_staged_release_rolls_back_falsely_at_most_alpha_of_the_time() -> None:
    policy = parse_policy(STAGED)
    assert [s.kind for s in policy.stages()] == ["targeted", "canary", "canary"]
    rng = np.random.default_rng(15)
    runs, naive_runs = 200, 60
    staged = sum(_aa_release(policy, rng, naive=False) for _ in range(runs))
    naive = sum(_aa_release(policy, rng, naive=True) for _ in range(naive_runs))
    alpha = policy.analysis.alpha
    # one-sided binomial test of H0: rate ≤ α; the staged budget must not be rejected
    assert sps.binomtest(staged, runs, alpha, alternative="greater").pvalue > 0.01
    assert staged / runs <= alpha
    # the same looks tested without the budget do inflate: the check can fail
    assert sps.binomtest(naive, naive_runs, alpha, alternative="greater").pvalue < 0.01
