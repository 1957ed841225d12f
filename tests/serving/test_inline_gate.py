"""Cheap small requests skip the thread hop; slow ones, large ones and a full set of busy
threads do not."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from serving.conftest import EXPLODE_SIGNATURE, free_port, start
from shipyard.registry import Registry
from shipyard.serving import LiveModels, Telemetry
from shipyard.serving.app import ServingApp
from shipyard.serving.execution import BoundedPool, InlineGate
from shipyard.workspace import Workspace

THREADS: list[str] = []
SLOW_S = 0.0


def where(x: np.ndarray) -> np.ndarray:
    """A python-flavor model that notes which thread ran it (and can be made slow)."""
    THREADS.append(threading.current_thread().name)
    if SLOW_S:
        time.sleep(SLOW_S)
    return x[:, 0]


class TestInlineGate:
    def test_a_version_runs_inline_only_after_proving_cheap(self) -> None:
        gate, pool = InlineGate(body_bytes=100, budget_s=0.002, proof=3), BoundedPool("t", 1, 1)
        for _ in range(2):
            assert not gate.admits("v", 50, pool)
            gate.observe("v", 50, 0.001, inline=False)
        assert not gate.admits("v", 50, pool)
        gate.observe("v", 50, 0.001, inline=False)
        assert gate.admits("v", 50, pool)
        assert not gate.admits("v", 101, pool), "a large body never runs inline"
        assert not gate.admits("other", 50, pool), "proof is per version"
        assert pool.try_acquire()
        assert not gate.admits("v", 50, pool), "once every thread works, all goes through the pool"
        pool.release()
        pool.shutdown()

    def test_a_cheap_request_runs_inline_beside_a_job_while_a_thread_is_free(self) -> None:
        """A small request sent to the pool beside a large job waited for the GIL behind the
        event loop, up to a switch interval (5 ms): measured beside maximum-size requests, that
        wait was most of the small requests' p99. While a thread is free nothing waits in the
        pool, so running inline passes no one."""
        gate, pool = InlineGate(body_bytes=100, budget_s=0.002, proof=1), BoundedPool("t", 2, 2)
        gate.observe("v", 50, 0.001, inline=False)
        assert pool.try_acquire()  # a large job holds one of the two threads
        assert gate.admits("v", 50, pool)
        assert pool.try_acquire()  # both threads busy: a request would wait in the pool
        assert not gate.admits("v", 50, pool)
        pool.release()
        pool.release()
        pool.shutdown()

    def test_a_slow_inline_request_sends_its_version_back_to_the_pool(self) -> None:
        gate, pool = InlineGate(body_bytes=100, budget_s=0.002, proof=2), BoundedPool("t", 1, 1)
        for _ in range(2):
            gate.observe("v", 50, 0.001, inline=False)
        assert gate.admits("v", 50, pool)
        gate.observe("v", 50, 0.05, inline=True)
        assert not gate.admits("v", 50, pool)
        pool.shutdown()

    def test_a_version_slower_than_the_budget_on_average_stays_on_the_pool(self) -> None:
        gate, pool = InlineGate(body_bytes=100, budget_s=0.002, proof=2), BoundedPool("t", 1, 1)
        for _ in range(20):
            gate.observe("v", 50, 0.004, inline=False)
        assert not gate.admits("v", 50, pool)
        pool.shutdown()

    def test_large_bodies_are_not_measured(self) -> None:
        gate, pool = InlineGate(body_bytes=100, budget_s=0.002, proof=1), BoundedPool("t", 1, 1)
        gate.observe("v", 500, 0.0001, inline=False)
        assert not gate.admits("v", 50, pool)
        pool.shutdown()


@pytest.fixture
def served(workspace: Workspace) -> Iterator[tuple[str, ServingApp]]:
    registry = Registry.of(workspace)
    registry.register(
        "where", where, flavor="python", signature=EXPLODE_SIGNATURE, alias="champion"
    )  # fmt: skip
    telemetry = Telemetry(workspace.store, workspace.artifacts, enabled=False)
    gate = InlineGate(proof=4, budget_s=0.02)
    app = ServingApp(LiveModels(registry, 0.1), telemetry, threads=2, queue=2, inline=gate)
    port = free_port()
    server, thread = start(app, port)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_cheap_small_requests_run_on_the_event_loop_and_large_or_slow_ones_on_the_pool(
    served: tuple[str, ServingApp],
) -> None:
    global SLOW_S
    url, _ = served
    one = {"instances": [[0.1, 0.2, 0.3]]}
    THREADS.clear()
    with httpx.Client(base_url=url, timeout=10) as c:
        for _ in range(6):
            assert c.post("/models/where/invocations", json=one).status_code == 200
        pool = [t for t in THREADS if t.startswith("shipyard-prediction")]
        assert len(pool) >= 4, THREADS  # proven on the pool first
        assert not THREADS[-1].startswith("shipyard-prediction"), THREADS
        THREADS.clear()
        large = {"instances": np.ones((400, 3)).tolist()}  # over 4 KiB
        assert c.post("/models/where/invocations", json=large).status_code == 200
        assert THREADS[-1].startswith("shipyard-prediction"), THREADS
        app = served[1]
        assert app.pool.try_acquire()  # one thread busy (as with a large job): still inline
        THREADS.clear()
        assert c.post("/models/where/invocations", json=one).status_code == 200
        assert not THREADS[-1].startswith("shipyard-prediction"), THREADS
        assert app.pool.try_acquire()  # every thread busy: through the pool, as is fair
        assert c.post("/models/where/invocations", json=one).status_code == 200
        assert THREADS[-1].startswith("shipyard-prediction"), THREADS
        app.pool.release()
        app.pool.release()
        SLOW_S = 0.3  # the model turns slow: one inline request demotes it
        try:
            THREADS.clear()
            for _ in range(2):
                assert c.post("/models/where/invocations", json=one).status_code == 200
            assert not THREADS[0].startswith("shipyard-prediction")
            assert THREADS[1].startswith("shipyard-prediction"), THREADS
        finally:
            SLOW_S = 0.0
