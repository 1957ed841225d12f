"""Live versions: alias moves are served within a second, tampered artifacts never load."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from sqlalchemy import func, select

from serving.conftest import Running, fit_classifier, free_port, start
from shipyard.registry import Registry
from shipyard.serving.live import LiveModels, LiveVersion, Loaded, pick, route_of
from shipyard.serving.routing import choose_version
from shipyard.serving.server import build_app
from shipyard.store.serving import PredictionRecord, ServingWindow
from shipyard.store.tables import ArtifactRecord
from shipyard.workspace import Workspace

ONE_ROW = {"instances": [[0.5, 0.5, 0.5]]}


def test_alias_move_is_served_within_one_second_without_restart(served: Running) -> None:
    clf, x = fit_classifier(seed=1)
    served.registry.register("iris", clf, training_data=x)
    with served.client() as c:
        assert (
            c.post("/models/iris/invocations", json=ONE_ROW).headers["x-shipyard-model-version"]
            == "1"
        )
        served.registry.set_alias("iris", "champion", 2, reason="test")
        moved = time.monotonic()
        while True:
            r = c.post("/models/iris/invocations", json=ONE_ROW)
            if r.headers["x-shipyard-model-version"] == "2":
                break
            assert time.monotonic() - moved < 1.0, "alias move not picked up within 1 s"
            time.sleep(0.01)
        assert c.get("/v2/models/iris").json()["versions"] == ["2"]


def test_tampered_artifact_is_refused_at_load_and_others_keep_serving(
    workspace: Workspace,
) -> None:
    registry = Registry.of(workspace)
    clf, x = fit_classifier()
    info = registry.register("bad", clf, training_data=x, alias="champion")
    path = Path(workspace.artifacts.uri(info.artifact_digest))
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    clf2, _ = fit_classifier(seed=3)
    registry.register("good", clf2, training_data=x, alias="champion")
    app = build_app(workspace, refresh_interval_s=0.1)
    port = free_port()
    server, thread = start(app, port)
    try:
        import httpx

        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            r = c.post("/models/bad/invocations", json=ONE_ROW)
            assert r.status_code == 503
            assert "tampered" in r.json()["message"]
            assert c.post("/models/good/invocations", json=ONE_ROW).status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_windows_predictions_and_sampled_request_log_reach_the_store(served: Running) -> None:
    with served.client() as c:
        for i in range(20):
            c.post("/models/iris/invocations", json=ONE_ROW, headers={"x-request-id": f"q{i}"})
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with served.ws.store.session() as s:
            requests = s.scalar(select(func.sum(ServingWindow.requests))) or 0
            logs = s.scalars(select(ArtifactRecord)).all()
        if requests == 20:
            break
        time.sleep(0.1)
    assert requests == 20
    with served.ws.store.session() as s:
        ids = set(s.scalars(select(PredictionRecord.request_id)))
        window = s.scalars(select(ServingWindow)).first()
    assert ids == {f"q{i}" for i in range(20)}
    assert window is not None and sum(window.latency_s["counts"]) == window.requests
    assert window.input_profile is not None and window.prediction_profile is not None
    ref = served.registry.get("iris").reference_profile
    assert ref is not None
    edges = ref["columns"]["a"]["edges"]
    assert window.input_profile["columns"]["a"]["edges"] == edges, "binned on the reference"
    request_logs = [a for a in logs if a.meta.get("kind") == "serving_request_log"]
    assert request_logs, "sample rate 1.0 logs every request"
    table = pq.read_table(request_logs[0].uri)
    assert set(table.column("request_id").to_pylist()) <= {f"q{i}" for i in range(20)}
    assert table.column("request").to_pylist()[0] == "[[0.5, 0.5, 0.5]]"


def test_metrics_are_prometheus_text(served: Running) -> None:
    with served.client() as c:
        c.post("/models/iris/invocations", json=ONE_ROW)
        text = c.get("/metrics").text
    assert 'shipyard_http_requests_total{code="200",model="iris",version="1"} 1.0' in text
    assert 'shipyard_http_request_duration_seconds_bucket{le="0.005",model="iris"' in text


def test_sticky_split_sends_a_key_to_the_same_version_and_respects_weights(
    served: Running,
) -> None:
    live: LiveModels = served.app.live
    one = live.routes["iris"].candidates[0]
    canary = Loaded(dataclasses.replace(one.info, version=99), one.predictor)
    route = route_of([(one, LiveVersion(1, 0.8)), (canary, LiveVersion(99, 0.2, canary=True))])
    hits = [pick(route, f"user:{i}") is canary for i in range(4000)]
    assert 0.17 < np.mean(hits) < 0.23
    assert all(pick(route, "user:u7") is pick(route, "user:u7") for _ in range(10))
    split = {1: 80.0, 99: 20.0}
    expected = [choose_version(f"user:{i}", split, 99, route.cohort) == 99 for i in range(4000)]
    assert hits == expected  # deploy's rule, so every replica agrees
