"""A registry on both backends, a fitted classifier, the models command, MLflow folders."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
import yaml
from sklearn.linear_model import LogisticRegression

from shipyard.artifacts import ArtifactStore
from shipyard.cli import models
from shipyard.clock import FakeClock
from shipyard.registry import Registry
from shipyard.store import Store


def _iris_like() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    y = (x["a"] + 0.5 * x["b"] > 0).astype(int).to_numpy()
    return x, y


@pytest.fixture
def iris_like() -> tuple[pd.DataFrame, np.ndarray]:
    return _iris_like()


@pytest.fixture(scope="session")
def _fitted_once() -> LogisticRegression:
    x, y = _iris_like()
    return LogisticRegression().fit(x.to_numpy(), y)


@pytest.fixture
def fitted(_fitted_once: LogisticRegression) -> LogisticRegression:
    """A logistic regression fitted on ``iris_like``: fitted once per session (a fit takes
    ~0.15 s), each test given a copy of its own."""
    return copy.deepcopy(_fitted_once)


@pytest.fixture
def registry(store: Store, tmp_path: Path) -> Registry:
    return Registry(store, ArtifactStore(str(tmp_path / "art"), store), FakeClock(), "alice")


@pytest.fixture
def app() -> typer.Typer:
    """``shipyard models …`` alone (the lazy CLI lists it in COMMANDS)."""
    app = typer.Typer()
    app.callback()(lambda: None)
    models.register(app)
    return app


SIGNATURE = json.dumps([{"type": "double", "name": n, "required": True} for n in ("a", "b", "c")])


def mlflow_folder(folder: Path, filename: str, fmt: str, model_bytes: bytes | None) -> Path:
    """An MLflow model folder as MLflow 3 writes it, by hand: ``MLmodel`` naming ``filename``."""
    folder.mkdir()
    if model_bytes is not None:
        (folder / filename).write_bytes(model_bytes)
    mlmodel = {
        "artifact_path": "model",
        "flavors": {
            "python_function": {"loader_module": "mlflow.sklearn", "model_path": filename},
            "sklearn": {"pickled_model": filename, "serialization_format": fmt},
        },
        "run_id": "abc123",
        "signature": {"inputs": SIGNATURE, "outputs": None},
    }
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return folder
