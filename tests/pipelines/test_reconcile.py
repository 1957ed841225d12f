"""Issue #20 item 8: a SIGKILLed ``shipyard run`` leaves no step running, is reconciled (run
failed, leases released, schedule free again), and ``shipyard runs cancel`` stops a live run."""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from shipyard.alerting.config import build_config
from shipyard.clock import FakeClock
from shipyard.daemon import DaemonContext, start_scheduled_runs
from shipyard.errors import NotFound
from shipyard.pipelines.loader import load_pipeline
from shipyard.pipelines.reconcile import reconcile_runs
from shipyard.pipelines.records import create_run, get_run
from shipyard.quota.admission import release_run_leases
from shipyard.quota.pools import PoolSpec, apply_pools, resolve
from shipyard.store.alerting import ScheduleState
from shipyard.store.quota import QuotaLease
from shipyard.store.tables import PipelineRecord, Run
from shipyard.workspace import Workspace

SLOW = """
@step(resources=Resources(cpu=1))
def slow() -> int:
    import subprocess
    child = subprocess.Popen(["sleep", "300"])  # what a step starts dies with it too
    Path("grandchild.pid").write_text(str(child.pid))
    time.sleep(300)
    return 1

@step(resources=Resources(cpu=1))
def after(x: int) -> int:
    return x

pipeline = Pipeline("slowpoke", kind="data", schedule="* * * * *")

@pipeline
def build():
    after(slow())
"""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _read(path: Path) -> str | None:
    return path.read_text() or None if path.exists() else None


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def active_leases(ws: Workspace, run_id: str) -> list[QuotaLease]:
    with ws.store.session() as s:
        return list(
            s.scalars(
                select(QuotaLease).where(
                    QuotaLease.run_id == run_id, QuotaLease.status.in_(("held", "waiting"))
                )
            )
        )


@pytest.fixture
def runner_process(
    workspace: Workspace, pipeline_file: Callable[..., Path]
) -> Iterator[Callable[[], tuple[subprocess.Popen[bytes], str, int]]]:
    """Start a real ``shipyard run`` of the slow pipeline in pool 'shared'; return the process,
    the run id and the running step's pid once the step runs."""
    apply_pools(workspace.store, [resolve(PoolSpec(name="shared", capacity={"cpu": 2}), 1.0)])
    target = pipeline_file(SLOW)
    started: list[subprocess.Popen[bytes]] = []

    def start() -> tuple[subprocess.Popen[bytes], str, int]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shipyard", "run", str(target), "--pool", "shared"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        started.append(proc)

        def step_running() -> tuple[str, int] | None:
            with workspace.store.session() as s:
                run_id = s.scalar(select(Run.id).order_by(Run.created_at.desc()).limit(1))
            if run_id is None:
                return None
            slow = get_run(workspace.store, run_id)["steps"][0]
            return (run_id, int(slow["pid"])) if slow["status"] == "running" else None

        run_id, pid = wait_for(step_running, 90, "the slow step to run")  # type: ignore[misc]
        return proc, run_id, pid

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def release(ws: Workspace) -> Callable[[str, str], list[str]]:
    """Quota's release of a run's leases, as the daemon hands it to ``reconcile_runs``."""
    return functools.partial(release_run_leases, ws.store)


def test_a_sigkilled_runner_leaves_no_step_and_is_reconciled(
    workspace: Workspace, runner_process: Callable[[], tuple[subprocess.Popen[bytes], str, int]]
) -> None:
    proc, run_id, step_pid = runner_process()
    assert active_leases(workspace, run_id)
    clock = FakeClock(time.time())
    launched: list[str] = []
    ctx = DaemonContext(
        workspace,
        build_config({}, home=workspace.settings.home),
        clock,
        lambda record: launched.append(record.name),
        workspace.settings.logs_dir,
    )
    start_scheduled_runs(ctx)  # the schedule's first sight of the pipeline
    assert reconcile_runs(workspace) == []  # a live runner is left alone

    grandchild = int(wait_for(lambda: _read(Path("grandchild.pid")), 30, "the step's child"))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    wait_for(lambda: gone(step_pid), 15, f"step process {step_pid} to die with its runner")
    wait_for(lambda: gone(grandchild), 15, f"the step's child {grandchild} to die with it")

    clock.advance(60)
    start_scheduled_runs(ctx)  # the bug: the abandoned run blocks the schedule
    with workspace.store.session() as s:
        state = s.get(ScheduleState, "slowpoke")
        assert state is not None and state.last_outcome == f"skipped: run {run_id} still going"
    assert launched == []

    (ended,) = reconcile_runs(workspace, release_leases=release(workspace))
    assert ended.run_id == run_id
    assert ended.reason == f"runner died: process {proc.pid} on {socket.gethostname()} is gone"
    info = get_run(workspace.store, run_id)
    assert (info["status"], info["exit_reason"]) == ("failed", ended.reason)
    assert [(s["step"], s["status"]) for s in info["steps"]] == [
        ("slow", "failed"),
        ("after", "cancelled"),
    ]
    assert info["steps"][0]["exit_reason"] == ended.reason
    assert active_leases(workspace, run_id) == []
    assert ended.leases_released
    assert reconcile_runs(workspace) == []  # ended once

    clock.advance(60)
    start_scheduled_runs(ctx)
    assert launched == ["slowpoke"]  # the schedule is free again


def test_runs_cancel_stops_a_live_run_and_says_so(
    workspace: Workspace, runner_process: Callable[[], tuple[subprocess.Popen[bytes], str, int]]
) -> None:
    from shipyard.cli import Group, runs

    app = typer.Typer(cls=Group)  # the CLI's root group: errors become one line
    app.callback()(lambda: None)
    runs.register(app)
    proc, run_id, step_pid = runner_process()

    result = CliRunner().invoke(app, ["runs", "cancel", run_id[:8]])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().startswith(f"✓ run {run_id} (slowpoke) cancelled; ")
    assert "steps stopped: slow" in result.stdout
    assert gone(step_pid)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err.decode()  # the runner saw it and stopped
    info = get_run(workspace.store, run_id)
    assert info["status"] == "cancelled"
    assert info["exit_reason"] == "cancelled by tester (shipyard runs cancel)"
    assert [s["status"] for s in info["steps"]] == ["cancelled", "cancelled"]
    assert active_leases(workspace, run_id) == []

    again = CliRunner().invoke(app, ["runs", "cancel", run_id])
    assert again.exit_code == 1
    ended_line = f"error: run {run_id} has already ended (cancelled); nothing to cancel"
    assert again.stderr.strip() == ended_line
    unknown = CliRunner().invoke(app, ["runs", "cancel", "abc123"])
    assert unknown.exit_code == 1
    message = str(NotFound("run", "abc123", "see `shipyard runs list`"))
    assert unknown.stderr.strip() == f"error: {message}"


def test_a_runner_on_another_host_is_judged_by_its_heartbeat(
    workspace: Workspace, pipeline_file: Callable[..., Path]
) -> None:
    file, pipeline = load_pipeline(str(pipeline_file(SLOW)))
    new = create_run(
        workspace.store,
        workspace.clock,
        pipeline,
        file,
        pipeline.build(),
        {},
        executor="local",
        actor="tester",
        logs_dir=workspace.settings.logs_dir,
    )
    assert reconcile_runs(workspace) == []  # this process runs it, and is alive
    now = time.time()
    with workspace.store.session() as s:
        run = s.get(Run, new.run_id)
        assert run is not None
        run.runner_host, run.heartbeat_at = "elsewhere", now - 30
    assert reconcile_runs(workspace, stale_after_s=60) == []  # late, not yet abandoned
    (ended,) = reconcile_runs(workspace, stale_after_s=10)
    assert ended.reason.startswith(f"runner died: no heartbeat from process {os.getpid()} on ")
    with workspace.store.session() as s:
        assert s.get(PipelineRecord, "slowpoke") is not None
        assert s.scalar(select(Run.status).where(Run.id == new.run_id)) == "failed"
