"""``shipyard server`` as a process: a killed control plane leaves nothing answering. Its
Uvicorn workers share the supervisor's socket; SIGKILL of the supervisor must end them too
(:mod:`shipyard.supervision`), or a "stopped" server would go on taking writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import anyio.to_thread
import httpx
import psutil
import pytest

from api.apikit import free_port
from server_testkit import gone, serving, until, uvicorn_workers
from shipyard.api.app import create_app
from shipyard.api.server import SUPERVISOR_ENV, watch_supervisor
from shipyard.workspace import Workspace


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
def test_workers_of_a_killed_control_plane_stop_answering(workspace: Workspace) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shipyard", "server", "--port", str(port), "--workers", "2"],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    everything: list[psutil.Process] = []
    try:
        until(lambda: _healthy(port) or proc.poll() is not None, "the server answers")
        assert proc.poll() is None, proc.communicate()[1].decode()
        workers = until(
            lambda: len(uvicorn_workers(proc)) == 2 and uvicorn_workers(proc), "two workers"
        )
        everything = psutil.Process(proc.pid).children(recursive=True)

        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

        until(lambda: all(gone(p) for p in workers), "the workers outlived their supervisor")
        until(lambda: not _healthy(port), f"port {port} still answers")
    finally:  # a failed test leaves nothing running either: the workers first, since they
        # hold the server's output pipes open and communicate() would wait for them
        for p in everything:
            if not gone(p):
                p.kill()
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def test_only_a_worker_of_several_watches_its_supervisor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SUPERVISOR_ENV, raising=False)
    assert watch_supervisor() is False, "one worker: Uvicorn serves in the main process"
    monkeypatch.setenv(SUPERVISOR_ENV, str(os.getpid()))
    assert watch_supervisor() is False, "the supervisor does not watch itself"
    monkeypatch.setenv(SUPERVISOR_ENV, "not-a-pid")
    assert watch_supervisor() is False


def test_a_worker_runs_as_many_operations_at_once_as_server_threads(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPYARD_SERVER__THREADS", "3")
    app = create_app(Workspace.open(home=workspace.settings.home))

    async def limit() -> int:
        return int(anyio.to_thread.current_default_thread_limiter().total_tokens)

    app.add_api_route("/probe-threads", limit)
    with serving(app, lifespan="on") as url:  # runs the lifespan, as `shipyard server` does
        assert httpx.get(f"{url}/probe-threads").json() == 3
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
