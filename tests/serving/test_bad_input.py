"""Bad input of every kind: a 4xx that names the problem, counted, and the server keeps serving."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from serving.conftest import Running
from shipyard.store.serving import ServingWindow

BINARY_HEAD = (
    b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64",'
    b' "parameters": {"binary_data_size": 24}}]}'
)
GOOD_V2 = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}

CASES: list[tuple[str, str, Any, dict[str, str], int, str]] = [
    ("v2 not json", "/v2/models/iris/infer", b"{nope", {}, 400, "not valid JSON"),
    ("v2 no inputs", "/v2/models/iris/infer", b'{"inputs": []}', {}, 400, "inputs"),
    (
        "v2 wrong width",
        "/v2/models/iris/infer",
        {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]},
        {},
        400,
        "[rows, 3]",
    ),
    (
        "v2 shape mismatch",
        "/v2/models/iris/infer",
        {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3]}]},
        {},
        400,
        "needs 6 values",
    ),
    (
        "v2 strings for numbers",
        "/v2/models/iris/infer",
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": ["a", "b", "c"]}]},
        {},
        400,
        "'x'",
    ),
    (
        "v2 unknown column",
        "/v2/models/iris/infer",
        {
            "inputs": [
                {"name": n, "shape": [1], "datatype": "FP64", "data": [1.0]}
                for n in ("a", "b", "zip")
            ]
        },
        {},
        400,
        "'zip'",
    ),
    (
        "v2 missing column",
        "/v2/models/iris/infer",
        {"inputs": [{"name": n, "shape": [1], "datatype": "FP64", "data": [1.0]} for n in "ab"]},
        {},
        400,
        "'c'",
    ),
    (
        "v2 NaN",
        "/v2/models/iris/infer",
        b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, NaN, 3]}]}',
        {},
        400,
        "'b'",
    ),
    (
        "v2 binary overrun",
        "/v2/models/iris/infer",
        BINARY_HEAD + b"abc",
        {"inference-header-content-length": str(len(BINARY_HEAD))},
        400,
        "binary_data_size",
    ),
    (
        "v2 unknown output",
        "/v2/models/iris/infer",
        {**GOOD_V2, "outputs": [{"name": "z"}]},
        {},
        400,
        "unknown output",
    ),
    (
        "mlflow two formats",
        "/models/iris/invocations",
        {"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]},
        {},
        400,
        "exactly one",
    ),
    (
        "mlflow string value",
        "/models/iris/invocations",
        {"dataframe_records": [{"a": 1, "b": "x", "c": 3}]},
        {},
        400,
        "'b'",
    ),
    (
        "mlflow missing column",
        "/models/iris/invocations",
        {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}},
        {},
        400,
        "'c'",
    ),
    (
        "mlflow ragged rows",
        "/models/iris/invocations",
        {"instances": [[1, 2, 3], [1, 2]]},
        {},
        400,
        "row 1",
    ),
    (
        "mlflow null",
        "/models/iris/invocations",
        {"dataframe_records": [{"a": 1, "b": None, "c": 3}]},
        {},
        400,
        "missing value",
    ),
    (
        "csv not a number",
        "/models/iris/invocations",
        b"a,b,c\n1,oops,3\n",
        {"content-type": "text/csv"},
        400,
        "'b'",
    ),
    (
        "unsupported media",
        "/models/iris/invocations",
        b"<xml/>",
        {"content-type": "application/xml"},
        415,
        "application/xml",
    ),
]


def _post(c: httpx.Client, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    if isinstance(body, bytes):
        return c.post(path, content=body, headers={"content-type": "application/json", **headers})
    return c.post(path, json=body, headers=headers)


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "needle"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_bad_input_is_a_clear_4xx_and_the_server_keeps_serving(
    served_module: Running, path: str, body: Any, headers: dict[str, str], status: int, needle: str
) -> None:
    with served_module.client() as c:
        r = _post(c, path, body, headers)
        assert r.status_code == status, r.text
        doc = r.json()
        message = doc["error"] if path.startswith("/v2") else doc["message"]
        assert needle in message
        assert r.headers["x-request-id"]
        ok = c.post("/v2/models/iris/infer", json=GOOD_V2)
        assert ok.status_code == 200


def test_bad_inputs_are_counted_as_data_type_problems(served: Running) -> None:
    with served.client() as c:
        for _ in range(3):
            c.post("/models/iris/invocations", json={"instances": [[1, "x", 3]]})
        c.post("/v2/models/iris/infer", json=GOOD_V2)
        metrics = c.get("/metrics").text
    assert 'shipyard_http_request_errors_total{kind="data",model="iris",version="1"} 3.0' in metrics
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with served.ws.store.session() as s:
            got = s.scalar(select(func.sum(ServingWindow.data_errors)))
        if got == 3:
            break
        time.sleep(0.1)
    assert got == 3


def test_model_that_raises_gives_500_with_request_id(served_module: Running) -> None:
    with served_module.client() as c:
        r = c.post(
            "/v2/models/boom/infer",
            json={
                "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [-1, 0, 0]}]
            },
            headers={"x-request-id": "req-boom"},
        )
        assert r.status_code == 500
        assert "req-boom" in r.json()["error"] and "blew the model up" in r.json()["error"]
        r = c.post("/models/boom/invocations", json={"instances": [[-1, 0, 0]]})
        assert r.status_code == 500 and r.headers["x-request-id"] in r.json()["message"]
        assert r.headers["x-shipyard-model-version"] == "1"  # which version failed
        bad = c.post("/models/boom/invocations", json={"instances": [["x", 0, 0]]})
        assert bad.status_code == 400 and bad.headers["x-shipyard-model-version"] == "1"
        fine = c.post("/models/boom/invocations", json={"instances": [[2, 0, 0]]})
        assert fine.json() == {"predictions": [4.0]}
        assert 'kind="model",model="boom"' in c.get("/metrics").text


def test_unknown_routes_and_models_are_404(served_module: Running) -> None:
    with served_module.client() as c:
        assert c.get("/nowhere").status_code == 404
        r = c.post("/models/ghost/invocations", json={"instances": [[1, 2, 3]]})
        assert r.status_code == 404 and "ghost" in r.json()["message"]
