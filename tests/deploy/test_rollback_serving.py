"""One-command rollback against a real model server on loopback: production traffic moves to
the previous version within 2 s (the server refreshes what is live every 0.5 s)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from deploy_testkit import training_frame
from sklearn.linear_model import LogisticRegression

from server_testkit import serving
from shipyard.deploy.loop import advance_rollouts, sync_aliases
from shipyard.deploy.policy import set_policy
from shipyard.deploy.rollback import rollback
from shipyard.deploy.rollout import get_rollout, start_rollout
from shipyard.registry import Registry
from shipyard.serving.server import build_app
from shipyard.statuses import RolloutState
from shipyard.workspace import Workspace

NO_APPROVALS = "approvals: {start: {count: 0}}\ncanary: {interval_s: 1, steps: []}\n"


@pytest.fixture
def server_url(workspace: Workspace) -> Iterator[str]:
    x, y = training_frame()
    for author in ("carol", "dave"):
        Registry(workspace.store, workspace.artifacts, actor=author).register(
            "churn", LogisticRegression().fit(x, y), training_data=x
        )
    set_policy(workspace.store, "churn", NO_APPROVALS, actor="admin")
    for version in (1, 2):
        rid = start_rollout(workspace.store, "churn", version, actor="carol").id
        advance_rollouts(workspace)
        assert get_rollout(workspace.store, rid).state == RolloutState.PRODUCTION
    app = build_app(workspace, monitoring=False, refresh_interval_s=0.5)
    with serving(app, lifespan="on") as url:
        yield url


def test_rollback_moves_production_traffic_within_two_seconds(
    workspace: Workspace, server_url: str
) -> None:
    x, _ = training_frame()
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64",
                        "data": x.to_numpy()[:1].tolist()}]}  # fmt: skip
    with httpx.Client(base_url=server_url, timeout=5) as c:

        def version() -> str:
            r = c.post("/v2/models/churn/infer", json=body)
            assert r.status_code == 200, r.text
            return r.headers["x-shipyard-model-version"]

        assert version() == "2"
        rollback(workspace.store, "churn", actor="alice")
        sync_aliases(workspace)  # what `shipyard rollback` does right after the transaction
        committed = time.monotonic()
        last_v2 = committed
        while time.monotonic() - committed < 2.5:
            if version() == "2":
                last_v2 = time.monotonic()
            time.sleep(0.01)
    assert last_v2 - committed <= 2.0
    assert version_after(server_url, body) == "1"


def version_after(url: str, body: dict[str, object]) -> str:
    with httpx.Client(base_url=url, timeout=5) as c:
        return c.post("/v2/models/churn/infer", json=body).headers["x-shipyard-model-version"]
