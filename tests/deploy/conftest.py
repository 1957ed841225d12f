"""Deploy fixtures: a workspace on each backend with a real registry holding two real models."""

from __future__ import annotations

import pytest
from deploy_testkit import T0, TEST_POLICY, classifier, training_frame

from shipyard.clock import FakeClock
from shipyard.deploy.policy import set_policy
from shipyard.registry import Registry
from shipyard.workspace import Workspace


@pytest.fixture
def clock() -> FakeClock:
    """The suite's fake clock (and so ``ws``'s), started at the deploy scenarios' T0."""
    return FakeClock(T0)


@pytest.fixture
def models(ws: Workspace) -> Registry:
    """Model 'churn': version 1 by carol, version 2 by dave (both real fitted classifiers)."""
    x, _ = training_frame()
    for author, c in (("carol", 1.0), ("dave", 0.5)):
        reg = Registry(ws.store, ws.artifacts, ws.clock, author)
        reg.register("churn", classifier(c), training_data=x)
    set_policy(ws.store, "churn", TEST_POLICY, actor="admin", clock=ws.clock)
    return Registry(ws.store, ws.artifacts, ws.clock, "tester")
