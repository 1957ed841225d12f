"""Which version ``rollback`` puts back: the last one that was healthy in production, never one
that was rolled back or aborted unless it is named (issue #19: rollback toggled 1 → 2 → 1 → 2)."""

from __future__ import annotations

import pytest
from deploy_testkit import training_frame
from sklearn.linear_model import LogisticRegression

from shipyard.clock import FakeClock
from shipyard.deploy.loop import advance_rollouts
from shipyard.deploy.policy import set_policy
from shipyard.deploy.production import production_history
from shipyard.deploy.rollback import rollback, standings
from shipyard.deploy.rollout import abort, get_rollout
from shipyard.deploy.rollout import start_rollout as start
from shipyard.errors import DeployError
from shipyard.registry import Registry
from shipyard.serving.split import live_split
from shipyard.statuses import RolloutState
from shipyard.workspace import Workspace

STRAIGHT_TO_PRODUCTION = "approvals: {start: {count: 0}}\ncanary: {interval_s: 60, steps: []}\n"
ONE_CANARY_STEP = (
    "approvals: {start: {count: 0}}\n"
    "canary: {interval_s: 60, steps: [{weight_pct: 10, min_duration_s: 120, min_samples: 100}]}\n"
)


@pytest.fixture
def three(ws: Workspace, clock: FakeClock) -> Workspace:
    """Model 'churn' with versions 1, 2 and 3 and a policy that goes straight to production."""
    x, y = training_frame()
    for c in (1.0, 0.5, 0.25):
        Registry(ws.store, ws.artifacts, clock, "carol").register(
            "churn", LogisticRegression(C=c).fit(x, y), training_data=x
        )
    set_policy(ws.store, "churn", STRAIGHT_TO_PRODUCTION, actor="admin", clock=clock)
    return ws


def promote(ws: Workspace, clock: FakeClock, version: int) -> str:
    clock.advance(10)
    rid = start(ws.store, "churn", version, actor="carol", clock=clock).id
    advance_rollouts(ws, clock)
    assert get_rollout(ws.store, rid).state == RolloutState.PRODUCTION
    return rid


def aborted(ws: Workspace, clock: FakeClock, version: int) -> str:
    clock.advance(10)
    rid = start(ws.store, "churn", version, actor="carol", clock=clock).id
    clock.advance(1)
    abort(ws.store, rid, actor="alice", reason="looked wrong", clock=clock)
    assert get_rollout(ws.store, rid).state == RolloutState.ROLLED_BACK
    return rid


def roll_back(ws: Workspace, clock: FakeClock, to: int | None = None) -> dict[str, object]:
    clock.advance(10)
    return rollback(ws.store, "churn", actor="alice", to_version=to, clock=clock)


def production(ws: Workspace) -> int | None:
    split = live_split(ws.store, "churn")
    return split.stable if split is not None else None


class TestRollbackTarget:
    def test_a_second_rollback_does_not_bring_back_a_rolled_back_then_aborted_version(
        self, three: Workspace, clock: FakeClock
    ) -> None:
        """The issue's exact sequence: 1 → 2 promoted → rollback (2 → 1) → 2 aborted → rollback."""
        promote(three, clock, 1)
        promote(three, clock, 2)
        assert roll_back(three, clock)["to"] == 1
        aborted(three, clock, 2)
        with pytest.raises(DeployError, match="no earlier production version that was") as caught:
            roll_back(three, clock)
        assert "v2: rolled back or aborted in rollout" in str(caught.value)
        assert "--to-version" in str(caught.value)
        assert production(three) == 1
        assert [p.version for p in production_history(three.store, "churn")] == [1, 2, 1]

    def test_the_right_earlier_version_is_chosen_past_the_condemned_one(
        self, three: Workspace, clock: FakeClock
    ) -> None:
        promote(three, clock, 1)
        promote(three, clock, 2)
        promote(three, clock, 3)
        assert roll_back(three, clock)["to"] == 2
        aborted(three, clock, 3)
        assert roll_back(three, clock)["to"] == 1  # not 3, rolled back then aborted

    def test_a_version_promoted_again_after_a_rollback_counts_by_its_latest_record(
        self, three: Workspace, clock: FakeClock
    ) -> None:
        promote(three, clock, 1)
        promote(three, clock, 2)
        assert roll_back(three, clock)["to"] == 1
        promote(three, clock, 2)  # fixed elsewhere, tried again and promoted
        promote(three, clock, 3)  # then replaced, in good health, by 3
        assert roll_back(three, clock)["to"] == 2

    def test_a_named_unhealthy_version_is_put_back_with_a_warning(
        self, three: Workspace, clock: FakeClock
    ) -> None:
        promote(three, clock, 1)
        promote(three, clock, 2)
        assert roll_back(three, clock, to=1)["warning"] is None  # 1 was healthy
        aborted(three, clock, 2)
        result = roll_back(three, clock, to=2)
        assert result["to"] == 2 and production(three) == 2
        assert "rollout" in str(result["warning"]) and "as named" in str(result["warning"])
        never = roll_back(three, clock, to=3)
        assert "never served production" in str(never["warning"])

    def test_rolling_back_a_canary_keeps_the_stable_version_healthy(
        self, three: Workspace, clock: FakeClock
    ) -> None:
        promote(three, clock, 1)
        promote(three, clock, 2)
        set_policy(three.store, "churn", ONE_CANARY_STEP, actor="admin", clock=clock)
        clock.advance(10)
        rid = start(three.store, "churn", 3, actor="carol", clock=clock).id
        advance_rollouts(three, clock)
        clock.advance(1)
        advance_rollouts(three, clock)
        assert get_rollout(three.store, rid).state == RolloutState.CANARY
        assert roll_back(three, clock)["to"] == 2  # the canary's stable version
        with three.store.session(readonly=True) as s:
            health = standings(s, "churn")
        assert health[1].healthy and not health[3].healthy
        assert 2 not in health or health[2].healthy
        assert roll_back(three, clock)["to"] == 1  # 2 → 1: 3 is never a candidate
