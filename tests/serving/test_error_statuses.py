"""Over a real socket, an error the model server raises is answered with its class's status
(``http_status`` in :mod:`shipyard.errors`), MLflow's ``error_code`` on ``/invocations``, and the
error's own message."""

from __future__ import annotations

import httpx

from serving.conftest import Running, bearer
from shipyard.errors import NotFound, RequestTooLarge, SchemaViolation, UnsupportedMediaType


def _mlflow(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error_code"] == code
    message: str = body["message"]
    return message


def test_an_unknown_model_s_feedback_is_not_found(served_module: Running) -> None:
    with served_module.client() as c:
        r = c.post(
            "/v2/models/ghost/feedback",
            json={"request_ids": ["r1"], "labels": [1]},
            headers=bearer(served_module.ws, "olga", "operator"),
        )
    assert r.status_code == NotFound.http_status == 404
    assert r.json() == {"error": str(NotFound("model", "ghost"))}


def test_a_body_neither_json_nor_csv_is_unsupported_media_type(served_module: Running) -> None:
    with served_module.client() as c:
        r = c.post(
            "/models/iris/invocations", content=b"<a/>", headers={"content-type": "text/xml"}
        )
    message = _mlflow(r, UnsupportedMediaType.http_status, "BAD_REQUEST")
    assert r.status_code == 415 and "text/xml" in message


def test_a_body_over_the_bound_is_request_too_large(served_module: Running) -> None:
    with served_module.client() as c:
        r = c.post("/models/iris/invocations", content=b" " * (2 * 2**20))
    message = _mlflow(r, RequestTooLarge.http_status, "BAD_REQUEST")
    assert r.status_code == 413 and "max_body_bytes" in message and r.json()["field"] == "body"
    assert r.headers["x-shipyard-model"] == "iris"


def test_rows_of_the_wrong_width_are_a_schema_violation(served_module: Running) -> None:
    with served_module.client() as c:
        r = c.post("/models/iris/invocations", json={"instances": [[0.1, 0.2]]})
    _mlflow(r, SchemaViolation.http_status, "BAD_REQUEST")
    assert r.status_code == 400
