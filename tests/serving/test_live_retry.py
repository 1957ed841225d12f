"""A live version that failed to load is tried again with a backoff, and served once it loads.

Before, a version whose artifact failed (tampered, missing, a store away for a moment) stayed
refused until the server restarted. Now each refresh tries it again once its delay has passed:
1 s after the first failure, doubling, at most 60 s; ``LiveModels.unservable()`` names the live
models with no version loaded, and readiness follows it.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from serving.conftest import fit_classifier, free_port, start
from shipyard.clock import FakeClock
from shipyard.registry import Registry
from shipyard.serving.live import LiveModels, retry_delay_s
from shipyard.serving.server import build_app
from shipyard.workspace import Workspace

ONE_ROW = {"instances": [[0.5, 0.5, 0.5]]}


class Artifact:
    """A version's artifact file, broken and mended on disk."""

    def __init__(self, ws: Workspace, digest: str) -> None:
        self.path = Path(ws.artifacts.uri(digest))
        self.good = self.path.read_bytes()

    def tamper(self) -> None:
        data = bytearray(self.good)
        data[-10] ^= 0xFF
        self.path.write_bytes(bytes(data))

    def mend(self) -> None:
        self.path.write_bytes(self.good)


def registered(ws: Workspace, name: str = "fixme") -> Artifact:
    clf, x = fit_classifier()
    info = Registry.of(ws).register(name, clf, training_data=x, alias="champion")
    return Artifact(ws, info.artifact_digest)


def test_the_delay_doubles_from_one_second_up_to_a_minute() -> None:
    assert [retry_delay_s(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert retry_delay_s(10**6) == 60


def test_a_failed_version_is_retried_only_once_its_delay_has_passed(workspace: Workspace) -> None:
    artifact = registered(workspace)
    artifact.tamper()
    clock = FakeClock(start=1000.0)
    live = LiveModels(Registry.of(workspace), clock=clock)

    live.refresh()  # failure 1 at t=0: next try at t=1
    assert "tampered" in live.unservable()["fixme"] and "fixme" not in live.routes
    clock.advance(1.0)
    live.refresh()  # failure 2 at t=1: next try at t=3
    clock.advance(2.0)
    live.refresh()  # failure 3 at t=3: next try at t=7
    artifact.mend()
    clock.advance(3.9)
    live.refresh()  # t=6.9: not tried, though it would load now
    assert "fixme" in live.unservable() and live.route("fixme", "k") is None
    clock.advance(0.1)
    live.refresh()  # t=7: tried, and served
    assert live.unservable() == {}
    assert live.describe() == {"fixme": [1]}

    # served versions are not reloaded; a failure starts the backoff from one second again
    artifact.tamper()
    clock.advance(100.0)
    live.refresh()
    assert live.describe() == {"fixme": [1]}


def test_a_version_that_is_no_longer_live_is_forgotten(workspace: Workspace) -> None:
    artifact = registered(workspace)
    artifact.tamper()
    live = LiveModels(Registry.of(workspace), clock=FakeClock())
    live.refresh()
    assert list(live.unservable()) == ["fixme"]
    clf, x = fit_classifier(seed=4)
    Registry.of(workspace).register("fixme", clf, training_data=x, alias="champion")
    live.refresh()
    assert live.unservable() == {} and live.failure("fixme") is None
    assert live.describe() == {"fixme": [2]}


def test_a_fixed_artifact_is_served_and_ready_without_a_restart() -> None:
    ws = Workspace.open()
    artifact = registered(ws)
    artifact.tamper()
    app = build_app(ws, monitoring=False, refresh_interval_s=0.1)
    port = free_port()
    server, thread = start(app, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            refused = c.post("/models/fixme/invocations", json=ONE_ROW)
            assert refused.status_code == 503 and "tampered" in refused.json()["message"]
            ready = c.get("/v2/health/ready")
            assert ready.status_code == 503 and list(ready.json()["models"]) == ["fixme"]
            artifact.mend()
            deadline = time.monotonic() + 15
            while c.post("/models/fixme/invocations", json=ONE_ROW).status_code != 200:
                assert time.monotonic() < deadline, "the mended version was not served"
                time.sleep(0.05)
            assert c.get("/v2/health/ready").json() == {"ready": True}
            assert c.get("/ping").status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        ws.store.dispose()
