"""A server's own settings reach every request: ``serving.limits`` and the prediction pool.

The settings are read from the environment the way every worker of ``shipyard serve`` reads them
(``SHIPYARD_SERVING__LIMITS__MAX_ROWS``…); a version's ``serving.limits`` tag still overrides
them for that version.
"""

from __future__ import annotations

import json

import httpx
import pytest

from serving.conftest import fit_classifier, free_port, start
from shipyard.registry import Registry
from shipyard.serving.server import build_app
from shipyard.workspace import Workspace


def rows(n: int) -> dict[str, list[list[float]]]:
    return {"instances": [[0.1, 0.2, 0.3]] * n}


def test_server_wide_limits_and_pool_size_come_from_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHIPYARD_SERVING__LIMITS__MAX_ROWS", "5")
    monkeypatch.setenv("SHIPYARD_SERVING__THREADS", "3")
    monkeypatch.setenv("SHIPYARD_SERVING__QUEUE", "1")
    ws = Workspace.open()
    registry = Registry.of(ws)
    clf, x = fit_classifier()
    registry.register("iris", clf, training_data=x, alias="champion")
    tags = {"serving.limits": json.dumps({"max_rows": 10})}
    registry.register("wide", clf, training_data=x, alias="champion", tags=tags)
    app = build_app(ws, monitoring=False, refresh_interval_s=0.2)
    assert (app.pool.threads, app.pool.capacity) == (3, 4)
    port = free_port()
    server, thread = start(app, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            assert c.post("/models/iris/invocations", json=rows(5)).status_code == 200
            refused = c.post("/models/iris/invocations", json=rows(6))
            assert refused.status_code == 413, refused.text
            assert "max_rows=5" in refused.json()["message"]
            v2 = {
                "inputs": [{"name": "x", "shape": [6, 3], "datatype": "FP64", "data": [0.1] * 18}]
            }
            refused_v2 = c.post("/v2/models/iris/infer", json=v2)
            assert refused_v2.status_code == 413 and refused_v2.json()["field"] == "x"
            # the version's own tag overrides the server's limits for that version
            assert c.post("/models/wide/invocations", json=rows(6)).status_code == 200
            assert c.post("/models/wide/invocations", json=rows(11)).status_code == 413
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        ws.store.dispose()
