"""Shadow traffic over real sockets: the stable version answers every user as without a shadow,
whatever the shadow does; copies go to the shadow helper process, into the shadow log; a full
channel drops copies and counts them; the helper runs at idle priority and dies with its
worker."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import psutil
import pytest

from server_testkit import free_port, stop_server, until
from serving.conftest import EXPLODE_SIGNATURE, start
from serving.processes import kill_and_await_helper
from shipyard.registry import Registry
from shipyard.serving import records
from shipyard.serving.app import ServingApp
from shipyard.serving.server import build_app
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


def very_slow(x: np.ndarray) -> np.ndarray:
    """A shadow that takes 2 s a call: the channel fills while it answers."""
    time.sleep(2.0)
    return x[:, 0]


def _register(ws: Workspace) -> Registry:
    registry = Registry.of(ws)
    registry.register(
        MODEL, doubled, flavor="python", signature=EXPLODE_SIGNATURE, alias="champion"
    )  # v1
    registry.register(MODEL, always_raises, flavor="python", signature=EXPLODE_SIGNATURE)  # v2
    registry.register(MODEL, slow_tripled, flavor="python", signature=EXPLODE_SIGNATURE)  # v3
    registry.register(MODEL, very_slow, flavor="python", signature=EXPLODE_SIGNATURE)  # v4
    return registry


def _serve(ws: Workspace, capacity: int | None = None) -> Iterator[tuple[str, ServingApp]]:
    app = build_app(ws, flush_interval_s=0.2, refresh_interval_s=0.1, sample_rate=1.0)
    if capacity is not None:
        app.shadow.capacity_bytes = capacity
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


HELPER_S = 30
"""A deadline for the shadow helper's answers: it runs at idle priority, so on a machine that
other test runs keep busy it answers late."""


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
        until(lambda: _copies(url, 2, "failed") >= 20, "20 failed copies", timeout_s=HELPER_S)
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

        pairs = until(
            logged, "4 shadowed requests (50 % of 8) in the shadow log", timeout_s=HELPER_S
        )
        assert pairs.errors == []
        assert [p * 1.5 for p in pairs.stable] == pairs.shadow


HOOK_S = 3.0
"""How long the copy of one request is held up in the test below: far longer than an answer."""


class TestAfterTheResponse:
    def test_the_copy_is_made_once_the_user_has_the_answer_inline_and_on_the_pool(
        self, workspace: Workspace, shadowed: tuple[str, ServingApp]
    ) -> None:
        """A copy held up for seconds does not hold up the answer it copies: the worker makes
        it after the response is written, whether the request ran on the pool (the version's
        first requests) or on the event loop (once its requests proved cheap)."""
        url, app = shadowed
        _shadow(workspace, app, 3)
        offered: list[str] = []
        held = {"next": False}
        real = app.shadow.offer

        def held_up_offer(loaded: Any, x: Any, predictions: Any, rid: str) -> None:
            if held["next"]:
                held["next"] = False
                time.sleep(HOOK_S)
            offered.append(rid)
            real(loaded, x, predictions, rid)

        app.shadow.offer = held_up_offer  # type: ignore[method-assign]
        body = {"instances": [[1.0, 0.5, -0.5]]}
        with httpx.Client(base_url=url, timeout=30) as client:
            for where, before in (("pool", 0), ("inline", 12)):
                for _ in range(before):  # the version's small requests prove cheap: inline
                    client.post(f"/models/{MODEL}/invocations", json=body)
                until(lambda: not held["next"], "the last copy", timeout_s=10)
                held["next"] = True
                began = time.perf_counter()
                r = client.post(
                    f"/models/{MODEL}/invocations", json=body, headers={"x-request-id": where}
                )
                took = time.perf_counter() - began
                assert r.status_code == 200 and r.json() == {"predictions": [2.0]}
                assert took < HOOK_S, f"{where}: the answer waited {took:.1f} s for its copy"
                until(lambda w=where: w in offered, f"the {where} request's copy", timeout_s=10)
        assert app.inline.admits((MODEL, 1), 100, app.pool), "the second one ran inline"


class TestFullChannel:
    def test_a_full_channel_drops_copies_counts_them_and_users_do_not_wait(
        self, workspace: Workspace
    ) -> None:
        _register(workspace)
        served = _serve(workspace, capacity=1)  # the kernel's smallest send buffer: a few copies
        url, app = next(served)
        try:
            _shadow(workspace, app, 4)
            rows = [[float(i), 0.5, -0.5] for i in range(60)]
            began = time.perf_counter()
            answered = _ask(url, rows)
            took_s = time.perf_counter() - began
            assert [a for _, a, _ in answered] == [{"predictions": [2 * r[0]]} for r in rows]
            assert all(status == 200 for status, _, _ in answered)
            # 60 copies at 2 s a batch would be minutes on the request path
            assert took_s < 5.0, f"60 requests took {took_s:.2f} s"
            assert _copies(url, 4, "dropped") >= 1
            until(
                lambda: _copies(url, 4, "dropped") + _copies(url, 4, "answered") == 60,
                "every copy answered or dropped",
                timeout_s=HELPER_S,
            )
            assert _copies(url, 4, "failed") == 0
        finally:
            served.close()


class TestHelperProcess:
    def test_copies_are_answered_in_a_helper_process_at_idle_priority_that_stops_with_the_app(
        self, workspace: Workspace
    ) -> None:
        _register(workspace)
        served = _serve(workspace)
        url, app = next(served)
        try:
            assert app.shadow.process is None, "no copy yet: no helper"
            _shadow(workspace, app, 3)
            _ask(url, ROWS[:2])
            until(lambda: _copies(url, 3, "answered") == 2, "2 answered copies", timeout_s=HELPER_S)
            helper = app.shadow.process
            assert helper is not None and helper.pid is not None and helper.pid != os.getpid()
            assert psutil.Process(helper.pid).ppid() == os.getpid()
            if hasattr(os, "SCHED_IDLE"):
                assert os.sched_getscheduler(helper.pid) == os.SCHED_IDLE
        finally:
            served.close()
        assert not helper.is_alive(), "stopping the app ends its helper"
        with workspace.store.session(readonly=True) as s:
            pairs = records.shadow_pairs(s, workspace.artifacts, MODEL, 3, 1, since=0.0)
        assert pairs.requests == 2, "the helper wrote its last pairs before it ended"

    def test_the_helper_dies_with_its_worker(self, workspace: Workspace) -> None:
        home = workspace.settings.home
        _register(workspace)
        with workspace.store.session(immediate=True) as s:
            set_split(s, MODEL, stable=1, shadow=3, shadow_pct=100.0, now=time.time())
        script = textwrap.dedent(
            f"""
            import sys, time
            sys.path[:0] = {sys.path!r}  # the test module, which the models were pickled from
            import numpy as np
            from prometheus_client import CollectorRegistry
            from shipyard.registry import Registry
            from shipyard.serving.live import LiveModels
            from shipyard.serving.shadow import ShadowCopies
            from shipyard.workspace import Workspace
            ws = Workspace.open(home={str(home)!r})
            live = LiveModels(Registry.of(ws))
            live.refresh()
            copies = ShadowCopies(live, CollectorRegistry(), None, None)
            copies.start()
            stable = live.routes[{MODEL!r}].candidates[0]
            copies.offer(stable, np.ones((1, 3)), np.ones(1), "r1")
            while copies.process is None or copies.process.pid is None:
                time.sleep(0.01)
            print(copies.process.pid, flush=True)
            time.sleep(120)
            """
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            env=os.environ.copy(),
            cwd=str(home.parent),
        )
        kill_and_await_helper(proc, "shadow", own_child=True)
