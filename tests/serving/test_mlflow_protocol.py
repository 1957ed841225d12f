"""MLflow's scoring protocol over a real socket: the four JSON formats and CSV."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from serving.conftest import Running, fit_classifier

CLF, X = fit_classifier()
ROWS = X.to_numpy()[:4]
EXPECTED = CLF.predict(ROWS).tolist()
COLS = ["a", "b", "c"]

BODIES: dict[str, Any] = {
    "dataframe_split": {"dataframe_split": {"columns": COLS, "data": ROWS.tolist()}},
    "dataframe_split_reordered": {
        "dataframe_split": {"columns": ["c", "a", "b"], "data": ROWS[:, [2, 0, 1]].tolist()}
    },
    "dataframe_records": {"dataframe_records": X.iloc[:4].to_dict(orient="records")},
    "instances_rows": {"instances": ROWS.tolist()},
    "instances_columns": {"instances": {c: ROWS[:, i].tolist() for i, c in enumerate(COLS)}},
    "inputs_columns": {"inputs": {c: ROWS[:, i].tolist() for i, c in enumerate(COLS)}},
    "inputs_rows": {"inputs": ROWS.tolist(), "params": {"ignored": 1}},
}


@pytest.mark.parametrize("fmt", sorted(BODIES))
def test_json_formats_answer_like_the_model(
    served_module: Running, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with served_module.client() as c:
        for path in ("/invocations", "/models/iris/invocations"):
            if path == "/invocations":  # for this test only: the server is the module's
                monkeypatch.setattr(served_module.app, "default_model", "iris")
            r = c.post(path, json=BODIES[fmt])
            assert r.status_code == 200, r.text
            assert r.json() == {"predictions": EXPECTED}
            assert r.headers["x-shipyard-model-version"] == "1"


def test_csv_answers_like_the_model(served_module: Running) -> None:
    csv = "a,b,c\n" + "\n".join(",".join(repr(float(v)) for v in row) for row in ROWS)
    with served_module.client() as c:
        r = c.post("/models/iris/invocations", content=csv, headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == EXPECTED


def test_ping_health_version(served_module: Running) -> None:
    with served_module.client() as c:
        assert c.get("/ping").status_code == 200
        assert c.get("/health").status_code == 200
        assert c.get("/version").text


def test_invocations_without_default_names_the_choice(served_module: Running) -> None:
    with served_module.client() as c:
        r = c.post("/invocations", json=BODIES["instances_rows"])
    assert r.status_code == 400
    assert "/models/{model}/invocations" in r.json()["message"]


def test_predictions_match_numpy_dtype(served_module: Running) -> None:
    with served_module.client() as c:
        r = c.post("/models/iris/invocations", json={"instances": [[0.0, 0.0, 0.0]]})
    assert r.json()["predictions"] == CLF.predict(np.zeros((1, 3))).tolist()
