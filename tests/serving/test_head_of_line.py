"""One large request no longer stalls a worker, and a full worker says so with a 503.

The model ``gate`` holds every request of more than one row until the test opens its gate, so
"a maximum-size request is being predicted" is a state the test controls, not a race: while it
holds, probes, ``/metrics`` and small requests must be answered (they waited for the whole
prediction when the model ran on the event loop); when the pool's threads and queue are all
taken, one more request is a 503 with ``Retry-After`` at once, not a wait without end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import numpy as np
import pytest

from serving.conftest import EXPLODE_SIGNATURE, fit_classifier, free_port, start
from shipyard.registry import Registry
from shipyard.serving import LiveModels, Telemetry
from shipyard.serving.app import ServingApp
from shipyard.workspace import Workspace

GATE = threading.Event()
ENTERED = threading.Event()
MAX_ROWS = 1000
ONE_ROW = {"instances": [[0.1, 0.2, 0.3]]}


def gated(x: np.ndarray) -> np.ndarray:
    """A python-flavor model that holds requests of more than one row until ``GATE`` opens."""
    if len(x) > 1:
        ENTERED.set()
        if not GATE.wait(timeout=60):
            raise RuntimeError("the test never opened the gate")
    return x[:, 0]


@dataclass
class Gated:
    url: str
    app: ServingApp
    pending: ThreadPoolExecutor

    def big(self) -> Future[httpx.Response]:
        """A maximum-size request to ``gate``, sent from another thread."""
        rows = np.ones((MAX_ROWS, 3)).tolist()
        return self.pending.submit(
            httpx.post, f"{self.url}/models/gate/invocations", json={"instances": rows}, timeout=60
        )


def serve_gated(ws: Workspace, threads: int, queue: int) -> Iterator[Gated]:
    registry = Registry.of(ws)
    clf, x = fit_classifier()
    registry.register("iris", clf, training_data=x, alias="champion")
    registry.register(
        "gate", gated, flavor="python", signature=EXPLODE_SIGNATURE, alias="champion",
        tags={"serving.limits": {"max_rows": MAX_ROWS}},
    )  # fmt: skip
    telemetry = Telemetry(ws.store, ws.artifacts, flush_interval_s=0.2, clock=ws.clock)
    app = ServingApp(
        LiveModels(registry, 0.1), telemetry, clock=ws.clock, threads=threads, queue=queue
    )
    GATE.clear()
    ENTERED.clear()
    port = free_port()
    server, thread = start(app, port)
    pending = ThreadPoolExecutor(4)
    try:
        yield Gated(f"http://127.0.0.1:{port}", app, pending)
    finally:
        GATE.set()
        pending.shutdown(wait=True)
        server.should_exit = True
        thread.join(timeout=10)
        ws.store.dispose()


@pytest.fixture
def two_threads(workspace: Workspace) -> Iterator[Gated]:
    yield from serve_gated(workspace, threads=2, queue=2)


@pytest.fixture
def one_thread_one_waiting(workspace: Workspace) -> Iterator[Gated]:
    yield from serve_gated(workspace, threads=1, queue=1)


def _until(check: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_probes_metrics_and_small_requests_are_answered_while_a_large_one_is_predicted(
    two_threads: Gated,
) -> None:
    with httpx.Client(base_url=two_threads.url, timeout=10) as c:
        over = {"instances": np.ones((MAX_ROWS + 1, 3)).tolist()}
        assert c.post("/models/gate/invocations", json=over).status_code == 413
        big = two_threads.big()
        _until(ENTERED.is_set)
        assert c.get("/v2/health/live").status_code == 200
        assert c.get("/v2/health/ready").status_code == 200
        assert c.get("/ping").status_code == 200
        assert c.get("/metrics").status_code == 200
        assert c.post("/models/iris/invocations", json=ONE_ROW).status_code == 200
        v2 = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}
        assert c.post("/v2/models/iris/infer", json=v2).status_code == 200
        assert c.post("/models/gate/invocations", json=ONE_ROW).json() == {"predictions": [0.1]}
        assert not big.done(), "the large request ended before the others were answered"
        GATE.set()
        answer = big.result(timeout=30)
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == MAX_ROWS


def test_a_full_pool_answers_503_with_retry_after_and_keeps_answering_probes(
    one_thread_one_waiting: Gated,
) -> None:
    app = one_thread_one_waiting.app
    with httpx.Client(base_url=one_thread_one_waiting.url, timeout=10) as c:
        running = one_thread_one_waiting.big()
        _until(ENTERED.is_set)
        waiting = one_thread_one_waiting.big()
        _until(lambda: app.pool.admitted == 2)
        refused = c.post("/models/iris/invocations", json=ONE_ROW)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert "busy" in refused.json()["message"]
        assert refused.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
        assert refused.headers["x-shipyard-model"] == "iris"
        v2 = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}
        refused_v2 = c.post("/v2/models/iris/infer", json=v2)
        assert refused_v2.status_code == 503 and refused_v2.headers["retry-after"] == "1"
        assert c.get("/v2/health/live").status_code == 200
        assert 'code="503",model="iris"' in c.get("/metrics").text
        GATE.set()
        assert running.result(timeout=30).status_code == 200
        assert waiting.result(timeout=30).status_code == 200
        _until(lambda: app.pool.admitted == 0)
        assert c.post("/models/iris/invocations", json=ONE_ROW).status_code == 200
