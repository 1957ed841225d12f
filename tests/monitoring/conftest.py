"""Fixtures for the pipeline monitors: the digits data split as the demo splits it, and a
SQLite workspace on a fake clock (``ws``, on either backend, is the suite's)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from serving.conftest import served  # noqa: F401  (a model server over a socket)
from shipyard.alerting.config import AlertingConfig, build_config
from shipyard.alerting.defaults import default_rules
from shipyard.clock import FakeClock
from shipyard.workspace import Workspace


@pytest.fixture(scope="session")
def digits_split() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The demo's split: 1,347 training and 450 test images, stratified, seed 0."""
    frame = load_digits(as_frame=True).frame
    train, test = train_test_split(frame, test_size=0.25, random_state=0, stratify=frame["target"])
    return train.reset_index(drop=True), test.reset_index(drop=True)


@pytest.fixture
def sqlite_ws(tmp_path: Path, migrated_sqlite: Callable[[Path], str]) -> Workspace:
    migrated_sqlite(tmp_path / "home" / "shipyard.db")
    return Workspace.open(clock=FakeClock(), home=tmp_path / "home")


def only(*names: str, home: Path) -> AlertingConfig:
    """The alerting config with every default rule off but ``names``."""
    return build_config(
        {"defaults": {r.name: False for r in default_rules() if r.name not in names}}, home=home
    )
