"""Deploy fixtures: a workspace on each backend with a real registry holding two real models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_testkit import T0, TEST_POLICY, training_frame
from sklearn.linear_model import LogisticRegression

from shipyard.clock import FakeClock
from shipyard.deploy.policy import set_policy
from shipyard.registry import Registry
from shipyard.workspace import Workspace


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def dws(db_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[Workspace]:
    """A workspace on SQLite, then on PostgreSQL, with the fake clock."""
    ws = Workspace.open(clock=clock, home=tmp_path / "home", db_url=db_url)
    yield ws
    ws.store.dispose()


@pytest.fixture
def models(dws: Workspace) -> Registry:
    """Model 'churn': version 1 by carol, version 2 by dave (both real fitted classifiers)."""
    x, y = training_frame()
    for author, c in (("carol", 1.0), ("dave", 0.5)):
        reg = Registry(dws.store, dws.artifacts, dws.clock, author)
        reg.register("churn", LogisticRegression(C=c).fit(x, y), training_data=x)
    set_policy(dws.store, "churn", TEST_POLICY, actor="admin", clock=dws.clock)
    return Registry(dws.store, dws.artifacts, dws.clock, "tester")
