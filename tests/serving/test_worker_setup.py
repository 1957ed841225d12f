"""A server hands its workers their setup explicitly: the workspace it opened (not whatever the
environment names), the command's options and who supervises them, with nothing of its own left
in ``os.environ``; each process opens the workspace once."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from serving.conftest import fit_classifier, free_port
from shipyard.registry import Registry
from shipyard.serving.server import AppFactory, WorkerSetup
from shipyard.workspace import Workspace

ONE_ROW = {"instances": [[0.5, 0.5, 0.5]]}
OURS = ("SHIPYARD_SERVE", "PROMETHEUS_MULTIPROC_DIR")


def _served_workspace(tmp_path: Path) -> Workspace:
    """``iris`` v1 (champion) in a workspace that the environment does not name."""
    ws = Workspace.open(home=tmp_path / "served")
    clf, x = fit_classifier()
    Registry.of(ws).register("iris", clf, training_data=x, alias="champion")
    return ws


def test_the_factory_serves_from_the_workspace_it_is_given_without_opening_another(
    tmp_path: Path,
) -> None:
    ws = _served_workspace(tmp_path)
    setup = WorkerSetup(ws.settings, default_model="iris", monitoring=False)
    app = AppFactory(setup, ws)()
    assert app.live.registry.store is ws.store
    assert app.default_model == "iris"


def test_a_factory_pickled_into_a_worker_opens_the_servers_workspace_not_the_environments(
    tmp_path: Path,
) -> None:
    ws = _served_workspace(tmp_path)
    assert Path(os.environ["SHIPYARD_HOME"]) != ws.settings.home  # the environment names another
    factory = AppFactory(WorkerSetup(ws.settings, monitoring=False), ws)
    worker_factory = pickle.loads(pickle.dumps(factory.for_spawned_workers()))
    app = worker_factory()
    assert app.live.registry.store is not ws.store  # a process of its own opens its own
    assert app.live.registry.store.url == ws.store.url
    app.live.refresh()
    assert app.live.describe() == {"iris": [1]}
    app.live.registry.store.dispose()


@pytest.mark.slow
def test_spawned_workers_serve_the_servers_workspace_and_nothing_is_left_in_the_environment(
    tmp_path: Path,
) -> None:
    ws = _served_workspace(tmp_path)
    port = free_port()
    decoy = tmp_path / "decoy"  # what a worker reading the environment would open: no models
    code = (
        "import json, os\n"
        "from shipyard.serving.server import run\n"
        "from shipyard.workspace import Workspace\n"
        f"ws = Workspace.open(home={str(ws.settings.home)!r})\n"
        f"run('127.0.0.1', {port}, workers=2, default_model='iris', ws=ws)\n"
        f"print(json.dumps(sorted(k for k in os.environ if k.startswith({OURS!r}))))\n"
    )
    env = {**os.environ, "SHIPYARD_HOME": str(decoy)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, stdout=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/v2/models/iris", timeout=1)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
            time.sleep(0.1)
        answer = httpx.post(
            f"http://127.0.0.1:{port}/invocations", json=ONE_ROW, timeout=10
        )  # --model: /invocations answers for iris
        assert answer.status_code == 200, answer.text
        workers = [
            p for p in psutil.Process(proc.pid).children() if "spawn" in " ".join(p.cmdline())
        ]
        assert len(workers) == 2
        for worker in workers:
            assert not [k for k in worker.environ() if k.startswith("SHIPYARD_SERVE")]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert json.loads(out.decode().strip().splitlines()[-1]) == []
    assert not decoy.exists(), "no process opened the workspace the environment names"
    ws.store.dispose()
