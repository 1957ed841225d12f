"""Shadow traffic over real sockets: the stable version answers every user as without a shadow,
whatever the shadow does; copies go to the shadow off the request path, into the shadow log;
a full shadow queue drops copies and counts them."""

from __future__ import annotations

import math
import queue
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from server_testkit import free_port, stop_server, until
from serving.conftest import EXPLODE_SIGNATURE, start
from shipyard.registry import Registry
from shipyard.serving import records
from shipyard.serving.app import ServingApp
from shipyard.serving.server import build_app
from shipyard.serving.shadow import BATCH_WAIT_S
from shipyard.serving.split import set_split
from shipyard.workspace import Workspace

MODEL = "churn"


def doubled(x: np.ndarray) -> np.ndarray:
    """The stable version: twice the first feature."""
    return x[:, 0] * 2


def always_raises(x: np.ndarray) -> np.ndarray:
    raise RuntimeError("the candidate fails on every row")


def slow_tripled(x: np.ndarray) -> np.ndarray:
    """A shadow that takes 0.2 s a call: slower than the requests arrive."""
    time.sleep(0.2)
    return x[:, 0] * 3


def _register(ws: Workspace) -> Registry:
    registry = Registry.of(ws)
    registry.register(
        MODEL, doubled, flavor="python", signature=EXPLODE_SIGNATURE, alias="champion"
    )  # v1
    registry.register(MODEL, always_raises, flavor="python", signature=EXPLODE_SIGNATURE)  # v2
    registry.register(MODEL, slow_tripled, flavor="python", signature=EXPLODE_SIGNATURE)  # v3
    return registry


def _serve(ws: Workspace, capacity: int | None = None) -> Iterator[tuple[str, ServingApp]]:
    app = build_app(ws, flush_interval_s=0.2, refresh_interval_s=0.1, sample_rate=1.0)
    if capacity is not None:
        app.shadow.queue = queue.Queue(maxsize=capacity)
    port = free_port()
    server, thread = start(app, port)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        stop_server(server, thread)
        ws.store.dispose()


@pytest.fixture
def shadowed(workspace: Workspace) -> Iterator[tuple[str, ServingApp]]:
    _register(workspace)
    yield from _serve(workspace)


def _shadow(ws: Workspace, app: ServingApp, shadow: int | None, pct: float = 100.0) -> None:
    """Put ``shadow`` (None: no shadow) behind v1 and wait until the server routes by it."""
    with ws.store.session(immediate=True) as s:
        set_split(s, MODEL, stable=1, shadow=shadow, shadow_pct=pct, now=time.time())

    def routed() -> bool:
        route = app.live.routes.get(MODEL)
        got = route.shadow.version if route is not None and route.shadow is not None else None
        return route is not None and got == shadow

    until(routed, f"the server to shadow with {shadow}", timeout_s=10)


def _ask(url: str, rows: list[list[float]]) -> list[tuple[int, Any, str | None]]:
    out = []
    with httpx.Client(base_url=url, timeout=10) as client:
        for i, row in enumerate(rows):
            r = client.post(
                f"/models/{MODEL}/invocations",
                json={"instances": [row]},
                headers={"x-user-id": f"u{i}"},
            )
            out.append((r.status_code, r.json(), r.headers.get("x-shipyard-model-version")))
    return out


def _copies(url: str, version: int, outcome: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("shipyard_http_shadow_copies_total{") and (
            f'version="{version}"' in line and f'outcome="{outcome}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


ROWS = [[float(i) - 10.0, 0.5, -0.5] for i in range(20)] + [[1.0, "x", 2.0]]  # one bad row


class TestUsersSeeNoShadow:
    def test_answers_and_statuses_are_the_same_with_a_failing_shadow_on_and_off(
        self, workspace: Workspace, shadowed: tuple[str, ServingApp]
    ) -> None:
        url, app = shadowed
        _shadow(workspace, app, None)
        off = _ask(url, ROWS)
        _shadow(workspace, app, 2)
        on = _ask(url, ROWS)
        assert on == off
        assert {v for _, _, v in on if v is not None} == {"1"}
        assert [s for s, _, _ in on].count(200) == 20 and on[-1][0] == 400
        until(lambda: _copies(url, 2, "failed") >= 20, "20 failed copies", timeout_s=10)
        assert _copies(url, 2, "answered") == 0

    def test_a_shadow_that_answers_leaves_its_pairs_in_the_shadow_log(
        self, workspace: Workspace, shadowed: tuple[str, ServingApp]
    ) -> None:
        url, app = shadowed
        _shadow(workspace, app, 3, pct=50.0)
        answered = _ask(url, ROWS[:8])
        assert [a for _, a, _ in answered] == [{"predictions": [2 * r[0]]} for r in ROWS[:8]]

        def logged() -> records.ShadowPairs | None:
            with workspace.store.session(readonly=True) as s:
                got = records.shadow_pairs(s, workspace.artifacts, MODEL, 3, 1, since=0.0)
            return got if got.requests == 4 else None

        pairs = until(logged, "4 shadowed requests (50 % of 8) in the shadow log", timeout_s=10)
        assert pairs.errors == []
        assert [p * 1.5 for p in pairs.stable] == pairs.shadow


class TestFullQueue:
    def test_a_full_shadow_queue_drops_copies_counts_them_and_users_do_not_wait(
        self, workspace: Workspace
    ) -> None:
        _register(workspace)
        served = _serve(workspace, capacity=2)
        url, app = next(served)
        try:
            _shadow(workspace, app, 3)
            rows = [[float(i), 0.5, -0.5] for i in range(60)]
            began = time.perf_counter()
            answered = _ask(url, rows)
            took_s = time.perf_counter() - began
            assert all(status == 200 for status, _, _ in answered)
            # 60 copies at 0.2 s each would be 12 s on the request path
            assert took_s < 3.0, f"60 requests took {took_s:.2f} s"
            until(
                lambda: _copies(url, 3, "dropped") + _copies(url, 3, "answered") == 60,
                "every copy answered or dropped",
                timeout_s=10,
            )
            # each batch (≥ BATCH_WAIT_S + 0.2 s) takes at most the 2 waiting and 1 in hand;
            # 2 more may wait when the load ends
            cycle_s = BATCH_WAIT_S + 0.2
            at_most_answered = 3 * (math.ceil(took_s / cycle_s) + 1) + 2
            assert _copies(url, 3, "dropped") >= max(1, 60 - at_most_answered)
        finally:
            served.close()
