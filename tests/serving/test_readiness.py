"""Readiness tells a load balancer the truth, and the store's trouble is never the client's fault.

``/v2/health/ready`` and ``/ping`` are 503 while a live model cannot be served (a tampered
artifact, a malformed ``serving.limits`` tag), naming it; per-model readiness agrees; once the
model's live version is one that loads, the worker is ready again. A store that cannot take a
write (SQLite's "database is locked") answers feedback with 503 and ``Retry-After``, not 400.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from serving.conftest import bearer, fit_classifier, free_port, start
from shipyard.registry import Registry
from shipyard.serving.app import ServingApp
from shipyard.serving.server import build_app
from shipyard.workspace import Workspace

ONE_ROW = {"instances": [[0.5, 0.5, 0.5]]}


def tamper(ws: Workspace, digest: str) -> None:
    path = Path(ws.artifacts.uri(digest))
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def serve(workspace: Workspace) -> Iterator[Any]:
    """Start a server on the workspace once its models are registered; stopped afterwards."""
    running: list[Any] = []

    def _start(**options: Any) -> tuple[httpx.Client, ServingApp]:
        app = build_app(workspace, refresh_interval_s=0.1, **options)
        port = free_port()
        server, thread = start(app, port)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        running.append((server, thread, client))
        return client, app

    yield _start
    for server, thread, client in running:
        client.close()
        server.should_exit = True
        thread.join(timeout=10)
    workspace.store.dispose()


def _until(check: Any, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_ready_is_503_naming_a_live_model_whose_artifact_was_tampered(
    workspace: Workspace, serve: Any
) -> None:
    registry = Registry.of(workspace)
    clf, x = fit_classifier()
    bad = registry.register("bad", clf, training_data=x, alias="champion")
    tamper(workspace, bad.artifact_digest)
    registry.register("good", fit_classifier(seed=3)[0], training_data=x, alias="champion")
    c, _ = serve()
    ready = c.get("/v2/health/ready")
    assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
    doc = ready.json()
    assert doc["ready"] is False and list(doc["models"]) == ["bad"]
    assert "tampered" in doc["models"]["bad"] and "bad" in doc["error"]
    ping = c.get("/ping")
    assert ping.status_code == 503 and "tampered" in ping.json()["models"]["bad"]
    assert c.get("/health").status_code == 503
    assert c.get("/v2/health/live").json() == {"live": True}
    model_ready = c.get("/v2/models/bad/ready")
    assert model_ready.status_code == 503 and "tampered" in model_ready.json()["error"]
    assert c.get("/v2/models/good/ready").json() == {"name": "good", "ready": True}
    assert c.post("/models/good/invocations", json=ONE_ROW).status_code == 200

    # the failure belonged to version 1: once a version that loads is live, all is ready again
    registry.register("bad", fit_classifier(seed=5)[0], training_data=x, alias="champion")
    _until(lambda: c.get("/v2/health/ready").status_code == 200)
    assert c.get("/ping").status_code == 200
    assert c.get("/v2/models/bad/ready").json() == {"name": "bad", "ready": True}


def test_ready_when_every_live_model_loads(workspace: Workspace, serve: Any) -> None:
    registry = Registry.of(workspace)
    clf, x = fit_classifier()
    registry.register("iris", clf, training_data=x, alias="champion")
    c, _ = serve()
    assert c.get("/v2/health/ready").json() == {"ready": True}
    assert c.get("/ping").status_code == 200


def test_a_malformed_limits_tag_makes_its_model_unready_and_unserved(
    workspace: Workspace, serve: Any
) -> None:
    registry = Registry.of(workspace)
    clf, x = fit_classifier()
    tags = {"serving.limits": '{"max_rows": -1}'}
    registry.register("odd", clf, training_data=x, alias="champion", tags=tags)
    c, _ = serve()
    ready = c.get("/v2/health/ready")
    assert ready.status_code == 503 and "max_rows" in ready.json()["models"]["odd"]
    model_ready = c.get("/v2/models/odd/ready")
    assert model_ready.status_code == 503 and "max_rows" in model_ready.json()["error"]
    r = c.post("/models/odd/invocations", json=ONE_ROW)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "serving.limits" in r.json()["message"]


def test_feedback_while_the_database_is_locked_is_503_with_retry_after(
    workspace: Workspace, serve: Any
) -> None:
    registry = Registry.of(workspace)
    clf, x = fit_classifier()
    registry.register("iris", clf, training_data=x, alias="champion")
    engine = workspace.store.engine
    engine.dispose()
    workspace.store.busy_timeout_s = 0.3  # the store's own retries stop at its busy bound

    @event.listens_for(engine, "connect")
    def _short_busy_timeout(dbapi: Any, _record: Any) -> None:  # the store waits 30 s
        dbapi.execute("PRAGMA busy_timeout=200")

    olga = bearer(workspace, "olga", "operator")
    c, _ = serve()
    c.headers.update(olga)
    feedback = {"request_ids": ["r1"], "labels": [1]}
    holder = sqlite3.connect(engine.url.database, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        r = c.post("/v2/models/iris/feedback", json=feedback)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"  # StoreBusy's retry_after_s, at least 1 s
        assert "is busy: other writers hold its lock" in r.json()["error"]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert c.post("/v2/models/iris/feedback", json=feedback).json() == {"accepted": 1}
    missing = c.post("/v2/models/ghost/feedback", json=feedback)
    assert missing.status_code == 404 and "ghost" in missing.json()["error"]
    bad = c.post("/v2/models/iris/feedback", json={"request_ids": ["r1"], "labels": []})
    assert bad.status_code == 400
