from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from shipyard.artifacts import ArtifactStore
from shipyard.clock import FakeClock
from shipyard.registry import Registry
from shipyard.store import Store


@pytest.fixture
def iris_like() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    y = (x["a"] + 0.5 * x["b"] > 0).astype(int).to_numpy()
    return x, y


@pytest.fixture
def fitted(iris_like: tuple[pd.DataFrame, np.ndarray]) -> LogisticRegression:
    x, y = iris_like
    return LogisticRegression().fit(x.to_numpy(), y)


@pytest.fixture
def registry(store: Store, tmp_path: Path) -> Registry:
    return Registry(store, ArtifactStore(str(tmp_path / "art"), store), FakeClock(), "alice")
