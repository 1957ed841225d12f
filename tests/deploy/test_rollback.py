"""Rolling a model back (deploy/rollback.py) on SQLite and PostgreSQL: after a completed
rollout, and refused when there is nothing to go back to."""

from __future__ import annotations

import numpy as np
import pytest
from deploy_testkit import put_v1_in_production, serve_interval, start_v2_canary

from shipyard.clock import FakeClock
from shipyard.deploy.loop import advance_rollouts
from shipyard.deploy.production import production_history
from shipyard.deploy.rollback import rollback
from shipyard.deploy.rollout import get_rollout
from shipyard.errors import DeployError
from shipyard.registry import Registry
from shipyard.serving.split import live_split
from shipyard.statuses import RolloutState
from shipyard.workspace import Workspace


class TestRollback:
    def test_rollback_after_completion_restores_the_previous_version(
        self, ws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        rng = np.random.default_rng(5)
        put_v1_in_production(ws, models, clock)
        rid = start_v2_canary(ws, models, clock)
        for _ in range(8):
            serve_interval(ws, clock, rng)
            advance_rollouts(ws, clock)
            if get_rollout(ws.store, rid).state == RolloutState.PRODUCTION:
                break
        assert get_rollout(ws.store, rid).state == RolloutState.PRODUCTION
        clock.advance(3600)
        result = rollback(ws.store, "churn", actor="alice", clock=clock)
        assert (result["from"], result["to"], result["rollout"]) == (2, 1, rid)
        assert live_split(ws.store, "churn").weights == {1: 100.0}  # type: ignore[union-attr]
        assert get_rollout(ws.store, rid).state == RolloutState.ROLLED_BACK
        history = production_history(ws.store, "churn")
        assert [(h.version, h.via) for h in history] == [
            (1, "rollout"),
            (2, "rollout"),
            (1, "rollback"),
        ]
        advance_rollouts(ws, clock)
        assert models.get("churn").version == 1
        with pytest.raises(DeployError, match="already the production version"):
            rollback(ws.store, "churn", actor="alice", to_version=1, clock=clock)
        again = rollback(ws.store, "churn", actor="alice", to_version=2, clock=clock)
        assert again["to"] == 2

    def test_rollback_with_nothing_to_go_back_to_is_refused(
        self, ws: Workspace, models: Registry, clock: FakeClock
    ) -> None:
        with pytest.raises(DeployError, match="no earlier production version"):
            rollback(ws.store, "churn", actor="alice", clock=clock)
