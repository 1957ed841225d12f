"""MLflow folders built by hand, as MLflow 3 writes them; MLflow itself is not needed."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import yaml
from sklearn.linear_model import LogisticRegression

from registry.conftest import mlflow_folder
from shipyard.errors import InvalidInput
from shipyard.registry import Registry, import_mlflow


def write_folder(folder: Path, model: LogisticRegression, fmt: str) -> Path:
    filename = "model.skops" if fmt == "skops" else "model.pkl"
    data = sio.dumps(model) if fmt == "skops" else pickle.dumps(model)
    return mlflow_folder(folder, filename, fmt, data)


@pytest.mark.parametrize("fmt", ["skops", "pickle", "cloudpickle"])
def test_import_mlflow_folder_in_each_format(
    registry: Registry,
    fitted: LogisticRegression,
    iris_like: tuple[pd.DataFrame, np.ndarray],
    tmp_path: Path,
    fmt: str,
) -> None:
    folder = write_folder(tmp_path / "m", fitted, fmt)
    # a pickled model is loaded only under the trust flag (issue #20); the test wrote it itself
    info = import_mlflow(
        registry, folder, "imported", alias="champion", trust_pickle=fmt != "skops"
    )
    assert info.flavor == "sklearn" and ("trust" in info.lineage) == (fmt != "skops")
    assert info.signature.names == ("a", "b", "c")
    assert info.tags["mlflow_run_id"] == "abc123"
    _, predictor = registry.load("imported")
    x = iris_like[0].to_numpy()
    np.testing.assert_array_equal(predictor.predict(x), fitted.predict(x))


def test_folder_without_mlmodel_or_with_foreign_flavor_is_refused(
    registry: Registry, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="no MLmodel"):
        import_mlflow(registry, tmp_path / "empty", "x")
    (tmp_path / "tf").mkdir()
    (tmp_path / "tf" / "MLmodel").write_text(yaml.safe_dump({"flavors": {"tensorflow": {}}}))
    with pytest.raises(InvalidInput, match="only sklearn"):
        import_mlflow(registry, tmp_path / "tf", "x")
    assert registry.models() == []
