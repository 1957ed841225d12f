"""Several worker processes: each flushes its own windows; killing one loses at most a window;
``/metrics`` on any worker counts the requests of all of them."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import func, select

from serving.conftest import fit_classifier, free_port
from serving.processes import START_S
from shipyard.registry import Registry
from shipyard.store.serving import PredictionRecord, ServingWindow
from shipyard.workspace import Workspace

ONE_ROW = {"instances": [[0.5, 0.5, 0.5]]}


def _send(port: int, n: int) -> int:
    ok = 0
    body = json.dumps(ONE_ROW)
    for _ in range(n):
        # a fresh connection each time, so that the kernel spreads them over the workers
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/models/iris/invocations", body, {"content-type": "application/json"})
        ok += conn.getresponse().status == 200
        conn.close()
    return ok


def _totals(ws: Workspace) -> tuple[int, int, dict[str, int]]:
    with ws.store.session() as s:
        requests = s.scalar(select(func.sum(ServingWindow.requests))) or 0
        predictions = s.scalar(select(func.count(PredictionRecord.id))) or 0
        per_worker = dict(
            s.execute(
                select(ServingWindow.worker, func.sum(ServingWindow.requests)).group_by(
                    ServingWindow.worker
                )
            ).all()
        )
    return int(requests), int(predictions), {k: int(v) for k, v in per_worker.items()}


def _wait_gone(process: psutil.Process, timeout_s: float) -> None:
    """Until ``process`` has died (gone, or a zombie its parent has not reaped yet)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        assert time.monotonic() < deadline, f"process {process.pid} did not die"
        time.sleep(0.05)


@pytest.mark.slow
def test_flush_survives_a_killed_worker(workspace: Workspace, tmp_path: Path) -> None:
    clf, x = fit_classifier()
    Registry.of(workspace).register("iris", clf, training_data=x, alias="champion")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SHIPYARD_SERVING__FLUSH_INTERVAL_S": "0.3",
        "SHIPYARD_SERVING__REQUEST_LOG_SAMPLE_RATE": "0",
    }
    code = f"from shipyard.serving.server import run; run('127.0.0.1', {port}, workers=2)"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + START_S
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
            time.sleep(0.1)
        assert _send(port, 60) == 60
        deadline = time.monotonic() + 10
        while _totals(workspace)[0] < 60 and time.monotonic() < deadline:
            time.sleep(0.1)
        requests, predictions, per_worker = _totals(workspace)
        assert requests == predictions == 60

        busiest = max(per_worker, key=per_worker.__getitem__)
        victim = psutil.Process(int(busiest.split("-")[-2]))  # worker ids are host-pid-nonce
        assert victim.ppid() == proc.pid
        assert _send(port, 40) == 40
        victim.send_signal(signal.SIGKILL)  # mid-window: its last window is lost
        _wait_gone(victim, timeout_s=30)
        assert _send(port, 10) == 10, "the other worker (or a restarted one) keeps serving"
    finally:
        proc.send_signal(signal.SIGTERM)  # a clean shutdown flushes what is left
        proc.wait(timeout=START_S)

    requests, predictions, per_worker = _totals(workspace)
    assert 70 <= requests <= 110
    assert requests == predictions, "every window was written whole, with its predictions"
    assert set(per_worker) - {busiest}, "another worker served after the kill"


def _metric(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.slow
def test_metrics_of_any_worker_count_every_workers_requests(
    workspace: Workspace, tmp_path: Path
) -> None:
    clf, x = fit_classifier()
    Registry.of(workspace).register("iris", clf, training_data=x, alias="champion")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {
        **os.environ,
        "TMPDIR": str(scratch),
        "SHIPYARD_SERVING__FLUSH_INTERVAL_S": "0.3",
        "SHIPYARD_SERVING__REQUEST_LOG_SAMPLE_RATE": "0",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    code = f"from shipyard.serving.server import run; run('127.0.0.1', {port}, workers=2)"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path)
    sample = 'shipyard_http_requests_total{code="200",model="iris",version="1"}'
    try:
        deadline = time.monotonic() + START_S
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
            time.sleep(0.1)
        sent = 0
        while len(_totals(workspace)[2]) < 2:  # until both workers have served
            assert time.monotonic() < deadline + 30, "one worker got every connection"
            sent += _send(port, 20)
            flushed = time.monotonic() + 30
            while _totals(workspace)[0] < sent and time.monotonic() < flushed:  # a flush
                time.sleep(0.1)
        assert next(p.name for p in scratch.iterdir()).startswith("shipyard-metrics-")
        seen = []
        for _ in range(6):  # fresh connections: the scrapes land on either worker
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/metrics")
            seen.append(_metric(conn.getresponse().read().decode(), sample))
            conn.close()
        assert seen == [float(sent)] * 6
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=START_S)
    assert list(scratch.iterdir()) == [], "the server removes its metrics folder"
    _, _, per_worker = _totals(workspace)
    assert sum(per_worker.values()) == sent
