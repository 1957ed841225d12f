"""A killed ``shipyard serve`` leaves nothing serving: its workers end with it, its record and
lease follow, and the next server finds and reports what a killed one left behind (issue #20,
item 5). Real server processes on real sockets, killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from sqlalchemy import select

from server_testkit import gone, until, uvicorn_workers
from serving.conftest import first_answer, fit_classifier, free_port
from serving.processes import START_S, serve_commands, shipyard_serve
from shipyard.quota.pools import PoolSpec, apply_pools, resolve
from shipyard.registry import Registry
from shipyard.serving.instances import list_instances, reap_stale_instances, this_machine
from shipyard.store.quota import QuotaLease
from shipyard.store.serving import ServingInstance
from shipyard.workspace import Workspace

# A parent that starts a watched child, prints the child's pid and waits to be killed; the
# child prints whether the kernel's parent-death signal is armed, then idles like a server.
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", *sys.argv[1:]])
print(child.pid, flush=True)
time.sleep(600)
"""
CHILD = """
import os, sys, threading, time
from shipyard.supervision import ParentWatch
out, where = sys.argv[1], sys.argv[2]
watch = ParentWatch(os.getppid(), lambda: open(out, "w").write("closed"), poll_s=0.1)
if where == "main":
    watch.start()
else:  # a thread cannot set signal handlers: no kernel signal, the poll alone
    helper = threading.Thread(target=watch.start)
    helper.start()
    helper.join()
print(watch.kernel_signal, flush=True)
while True:
    time.sleep(0.1)
"""


@pytest.fixture
def ws(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """A workspace with a model to serve and a pool to serve it on; leases live a minute, so
    that a lease ended within a test was released, not left to expire."""
    monkeypatch.setenv("SHIPYARD_QUOTA__LEASE_TTL_S", "60")
    clf, x = fit_classifier()
    Registry.of(workspace).register("iris", clf, training_data=x, alias="champion")
    apply_pools(
        workspace.store,
        [resolve(PoolSpec(name="serving", capacity={"cpu": 4, "memory": "4Gi"}), 1.0)],
    )
    return workspace


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _instances(ws: Workspace) -> list[ServingInstance]:
    with ws.store.session() as s:
        return list(s.scalars(select(ServingInstance).order_by(ServingInstance.started_at)))


def _lease(ws: Workspace, lease_id: str | None) -> QuotaLease:
    with ws.store.session() as s:
        row = s.get(QuotaLease, lease_id)
        assert row is not None
        return row


def _stop(proc: subprocess.Popen[bytes]) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    return out.decode(), err.decode()


@pytest.mark.parametrize(
    ("where", "kernel_signal"),
    [("main", sys.platform.startswith("linux")), ("thread", False)],
    ids=["parent-death signal and poll", "poll alone"],
)
def test_a_watched_process_closes_up_and_ends_when_its_parent_is_killed(
    tmp_path: Path, where: str, kernel_signal: bool
) -> None:
    out = tmp_path / "orphaned"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, CHILD, str(out), where], stdout=subprocess.PIPE
    )
    assert parent.stdout is not None
    child = psutil.Process(int(parent.stdout.readline()))
    try:
        assert parent.stdout.readline().decode().strip() == str(kernel_signal)
        assert not out.exists()
        parent.kill()
        parent.wait()
        until(lambda: gone(child), "the child outlived its parent")
        assert out.read_text() == "closed", "it closed up before it ended"
    finally:
        if not gone(child):
            child.kill()
        parent.stdout.close()


@pytest.mark.slow
def test_workers_end_with_a_killed_supervisor_and_close_its_record_and_lease(
    ws: Workspace, tmp_path: Path
) -> None:
    port = free_port()
    proc = shipyard_serve(tmp_path, "--port", str(port), "--workers", "2", "--pool", "serving")
    everything: list[psutil.Process] = []
    try:
        assert first_answer(proc, port, START_S).status_code == 200
        workers = until(
            lambda: len(uvicorn_workers(proc)) == 2 and uvicorn_workers(proc), "two workers"
        )
        everything = psutil.Process(proc.pid).children(recursive=True)
        (instance,) = _instances(ws)
        assert instance.stopped_at is None and instance.machine == this_machine()
        assert _lease(ws, instance.lease_id).status == "held"
        assert [r.state for r in list_instances(ws.store, time.time())] == ["live"]
        assert reap_stale_instances(ws.store) == [], "a live server is left alone"

        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

        until(lambda: all(gone(p) for p in workers), "the workers outlived their supervisor")
        until(lambda: not _answers(port), f"port {port} still answers")
        until(lambda: all(gone(p) for p in everything), "a process of the server lives on")
    finally:  # a failed test leaves nothing running either: the workers first, since they
        # hold the server's output pipes open and _stop's communicate() would wait for them
        for p in everything:
            if not gone(p):
                p.kill()
        _stop(proc)
    (instance,) = _instances(ws)
    assert instance.stopped_at is not None
    assert f"its supervisor (pid {proc.pid}) died" in (instance.stop_reason or "")
    lease = _lease(ws, instance.lease_id)
    assert lease.status == "released", "released by a worker, well before the 60 s ttl"
    assert f"supervisor (pid {proc.pid}) died" in (lease.reason or "")


@pytest.mark.slow
@pytest.mark.parametrize(
    "workers", [1, 2], ids=["one process killed", "supervisor and workers killed at once"]
)
def test_the_next_server_reports_and_closes_the_record_of_a_killed_one(
    ws: Workspace, tmp_path: Path, workers: int
) -> None:
    port = free_port()
    killed = shipyard_serve(
        tmp_path, "--port", str(port), "--workers", str(workers), "--pool", "serving", session=True
    )
    try:
        assert first_answer(killed, port, START_S).status_code == 200
        if workers > 1:
            until(lambda: len(uvicorn_workers(killed)) == workers, "all workers")
        os.killpg(killed.pid, signal.SIGKILL)  # nothing of it can close the record
        killed.wait(timeout=10)
        until(lambda: not _answers(port), f"port {port} still answers")
    finally:
        _stop(killed)

    (listed,) = json.loads(serve_commands(tmp_path, "serving", "instances", "--json"))
    assert listed["state"] == "stale" and listed["pid"] == killed.pid
    assert listed["why"] == f"process {killed.pid} on {this_machine()} is gone"
    assert listed["lease_status"] == "held", "nobody released it yet"
    assert "stale" in serve_commands(tmp_path, "serving", "instances")

    restarted = shipyard_serve(tmp_path, "--port", str(port))  # the same address: it is free again
    try:
        assert first_answer(restarted, port, START_S).status_code == 200
    finally:
        out, err = _stop(restarted)
    assert "Traceback" not in err
    reported, serving = out.strip().splitlines()[:2]
    assert reported.startswith("found a server that did not stop cleanly and marked it stopped")
    assert f"http://127.0.0.1:{port} (pid {killed.pid} on {this_machine()})" in reported
    assert f"its lease {listed['lease_id']} in pool serving is released" in reported
    assert serving.startswith(f"serving on http://127.0.0.1:{port}")

    old, new = _instances(ws)
    assert old.id == listed["id"] and old.stopped_at is not None
    assert old.stop_reason == (
        f"process {killed.pid} on {this_machine()} is gone; "
        f"closed by the server starting at http://127.0.0.1:{port}"
    )
    assert _lease(ws, old.lease_id).status == "released"
    assert new.stopped_at is not None and new.stop_reason is None, "a clean stop"
    shown = serve_commands(tmp_path, "serving", "instances", "--all")
    assert f"stopped http://127.0.0.1:{port}  pid {killed.pid}" in shown
    assert serve_commands(tmp_path, "serving", "instances").startswith("no model servers running")
