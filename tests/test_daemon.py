"""The control loop: pluggable periodic tasks, one leader among many daemons, cron schedules
that neither lose a missed run nor start a running one twice, serving monitors that page when a
live model's server stops answering, clean shutdown on SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sqlalchemy import select

from shipyard.alerting.config import build_config
from shipyard.clock import SYSTEM_CLOCK, Clock, FakeClock
from shipyard.daemon import (
    Daemon,
    DaemonContext,
    PeriodicTask,
    acquire_leadership,
    start_scheduled_runs,
)
from shipyard.daemon.tasks import builtin_tasks
from shipyard.registry import Registry
from shipyard.serving.instances import (
    heartbeat_instance,
    list_instances,
    live_instances,
    register_instance,
    this_machine,
)
from shipyard.store import Store
from shipyard.store.alerting import AlertRecord, LeaderLease, ScheduleState
from shipyard.store.tables import Finding, MetricPoint, PipelineRecord, Run
from shipyard.workspace import Workspace

T0 = 1_700_000_100.0  # 2023-11-14 22:15:00 UTC, on a 5-minute boundary
DAEMON_MAIN = (
    "import typer\n"
    "from shipyard.cli.daemon import register\n"
    "app = typer.Typer()\n"
    "@app.callback()\n"
    "def root() -> None: ...\n"
    "register(app)\n"
    "app()\n"
)


def _context(ws: Workspace, clock: Clock, launched: list[str]) -> DaemonContext:
    def launch(pipeline: PipelineRecord) -> str:
        launched.append(pipeline.name)
        return f"run-{len(launched)}"

    cfg = build_config({}, home=ws.settings.home)
    return DaemonContext(ws, cfg, clock, launch, ws.settings.logs_dir)


class TestTasks:
    def test_a_task_runs_at_its_interval(self, workspace: Workspace) -> None:
        calls: list[float] = []
        clock = FakeClock(T0)

        def _count(ctx: DaemonContext) -> None:
            calls.append(ctx.clock.time())

        task = PeriodicTask("test.counter", 10, _count)
        loop = Daemon(_context(workspace, clock, []), tasks=[task])
        for _ in range(25):
            loop.tick()
            clock.advance(1)
        assert [c - T0 for c in calls] == [0, 10, 20]

    def test_a_failing_task_does_not_stop_the_others(self, workspace: Workspace) -> None:
        ran: list[str] = []

        def boom(ctx: DaemonContext) -> None:
            raise RuntimeError("boom")

        tasks = [PeriodicTask("boom", 1, boom), PeriodicTask("ok", 1, lambda c: ran.append("ok"))]
        loop = Daemon(_context(workspace, FakeClock(T0), []), tasks=tasks)
        assert loop.tick() == ["boom", "ok"]
        assert ran == ["ok"]

    def test_a_task_logs_when_it_starts_failing_and_when_it_recovers_not_every_tick(
        self, workspace: Workspace, caplog: pytest.LogCaptureFixture
    ) -> None:
        broken = [True]

        def flaky(ctx: DaemonContext) -> None:
            if broken[0]:
                raise RuntimeError("database away")

        loop = Daemon(_context(workspace, FakeClock(T0), []), tasks=[PeriodicTask("f", 0, flaky)])
        with caplog.at_level(logging.INFO, logger="shipyard.daemon"):
            for _ in range(5):
                loop.tick()
            broken[0] = False
            for _ in range(5):
                loop.tick()
        lines = [r.getMessage() for r in caplog.records if "task f" in r.getMessage()]
        assert lines == ["task f failed", "task f works again"]

    def test_a_broken_import_stops_the_daemon_at_start(
        self, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Not a daemon that runs without rollouts: the import error reaches the operator."""
        monkeypatch.delitem(sys.modules, "shipyard.daemon.tasks", raising=False)
        monkeypatch.setitem(sys.modules, "shipyard.deploy.loop", None)  # import fails
        with pytest.raises(ImportError, match=r"shipyard\.deploy\.loop"):
            import shipyard.daemon.tasks  # noqa: F401 - what `shipyard daemon` does first

    def test_every_built_in_task_runs_cleanly_on_a_fresh_workspace(
        self, workspace: Workspace, caplog: pytest.LogCaptureFixture
    ) -> None:
        loop = Daemon(_context(workspace, FakeClock(T0), []), tasks=builtin_tasks())
        with caplog.at_level(logging.ERROR, logger="shipyard.daemon"):
            ran = loop.tick()
        assert set(ran) >= {
            "runs.reconcile",
            "serving.reap",
            "pipelines.schedule",
            "monitors.evaluate",
            "alerts.evaluate",
            "notifications.deliver",
            "rollouts.advance",
            "quota.reclaim",
        }
        assert [r.getMessage() for r in caplog.records] == []

    def test_the_daemon_closes_the_record_of_a_server_whose_process_is_gone(
        self, workspace: Workspace
    ) -> None:
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()  # a pid that no longer runs, as a SIGKILLed server leaves behind
        clock = FakeClock(T0)
        instance = register_instance(
            workspace.store,
            url="http://127.0.0.1:1",
            host="127.0.0.1",
            workers=1,
            ttl_s=30,
            now=clock.time(),
            models=[],
            pid=gone.pid,
        )
        Daemon(_context(workspace, clock, []), tasks=builtin_tasks()).tick()
        (record,) = list_instances(
            workspace.store, clock.time(), include_stopped=True, ids=[instance]
        )
        assert record.state == "stopped"
        assert record.stop_reason == (
            f"process {gone.pid} on {this_machine()} is gone; closed by the daemon"
        )


class TestLeadership:
    def test_only_the_leader_acts_and_another_takes_over_after_expiry(self, store: Store) -> None:
        assert acquire_leadership(store, "a", 15, T0)
        assert not acquire_leadership(store, "b", 15, T0 + 1)
        assert acquire_leadership(store, "a", 15, T0 + 10)  # renewal
        assert not acquire_leadership(store, "b", 15, T0 + 24)
        assert acquire_leadership(store, "b", 15, T0 + 25)  # a stopped renewing
        with store.session() as s:
            assert s.get(LeaderLease, "daemon").holder == "b"  # type: ignore[union-attr]

    def test_the_lease_is_renewed_while_a_task_runs_longer_than_it(
        self, workspace: Workspace
    ) -> None:
        release = threading.Event()
        started = threading.Event()

        def long_task(ctx: DaemonContext) -> None:
            started.set()
            release.wait(20)

        ctx = _context(workspace, SYSTEM_CLOCK, [])
        leader = Daemon(ctx, leader_ttl_s=1.5, tasks=[PeriodicTask("long", 60, long_task)])
        other = Daemon(_context(workspace, SYSTEM_CLOCK, []), leader_ttl_s=1.5, tasks=[])
        runner = threading.Thread(target=leader.run)
        runner.start()
        try:
            assert started.wait(10)
            deadline = time.monotonic() + 4.5  # three lease lifetimes inside one task
            while time.monotonic() < deadline:
                assert not other.renew(), "the lease lapsed while its holder was busy"
                time.sleep(0.1)
            assert leader.is_leader
        finally:
            release.set()
            leader.stop()
            runner.join(10)
        assert other.renew()  # given up on a clean stop

    def test_two_daemons_one_store_only_one_runs_leader_tasks(
        self, migrated_db_url: str, tmp_path: Path
    ) -> None:
        ws = Workspace.open(home=tmp_path / "home", db_url=migrated_db_url)
        clock = FakeClock(T0)
        ran: list[str] = []
        task = PeriodicTask("work", 1, lambda ctx: ran.append(ctx.workspace.settings.user or ""))
        first = Daemon(_context(ws, clock, []), tasks=[task], holder="first")
        second = Daemon(_context(ws, clock, []), tasks=[task], holder="second")
        for _ in range(5):
            first.tick()
            second.tick()
            clock.advance(1)
        assert (first.is_leader, second.is_leader) == (True, False)
        assert len(ran) == 5
        first.stop()
        first.run()  # returns at once, giving the lease up
        second.tick()
        assert second.is_leader
        ws.store.dispose()


def _pipeline(ws: Workspace, schedule: str = "*/5 * * * *") -> None:
    with ws.store.session() as s:
        s.add(
            PipelineRecord(
                name="nightly", kind="data", file="p.py", schedule=schedule, spec={}, updated_at=T0
            )
        )


class TestSchedule:
    def test_missed_slots_after_downtime_start_one_run(self, workspace: Workspace) -> None:
        clock = FakeClock(T0 + 1)
        launched: list[str] = []
        ctx = _context(workspace, clock, launched)
        _pipeline(workspace)
        assert start_scheduled_runs(ctx) == []  # first sight: remember the slot
        clock.advance(299)
        assert start_scheduled_runs(ctx) == []
        clock.advance(1)  # the next slot
        assert start_scheduled_runs(ctx) == ["nightly"]
        assert start_scheduled_runs(ctx) == []
        clock.advance(3600)  # twelve slots missed while down
        assert start_scheduled_runs(ctx) == ["nightly"]
        assert start_scheduled_runs(ctx) == []
        assert launched == ["nightly", "nightly"]
        with workspace.store.session() as s:
            state = s.get(ScheduleState, "nightly")
            assert state is not None and state.last_run_id == "run-2"

    def test_a_run_still_going_is_not_started_twice(self, workspace: Workspace) -> None:
        clock = FakeClock(T0 + 1)
        launched: list[str] = []
        ctx = _context(workspace, clock, launched)
        _pipeline(workspace)
        start_scheduled_runs(ctx)
        with workspace.store.session() as s:
            s.add(
                Run(
                    id="r1",
                    pipeline="nightly",
                    kind="data",
                    file="p.py",
                    status="running",
                    created_at=T0,
                )
            )
        clock.advance(300)
        assert start_scheduled_runs(ctx) == []
        with workspace.store.session() as s:
            state = s.get(ScheduleState, "nightly")
            assert state is not None and state.last_outcome == "skipped: run r1 still going"
        assert launched == []

    def test_a_launch_interrupted_by_a_crash_happens_after_restart(
        self, workspace: Workspace
    ) -> None:
        clock = FakeClock(T0 + 1)
        _pipeline(workspace)
        with workspace.store.session() as s:  # what a daemon killed mid-launch leaves behind
            s.add(ScheduleState(pipeline="nightly", last_slot_at=T0, last_outcome="launching"))
        launched: list[str] = []
        assert start_scheduled_runs(_context(workspace, clock, launched)) == ["nightly"]
        assert start_scheduled_runs(_context(workspace, clock, launched)) == []

    def test_a_bad_cron_expression_is_skipped(self, workspace: Workspace) -> None:
        _pipeline(workspace, schedule="every tuesday")
        assert start_scheduled_runs(_context(workspace, FakeClock(T0), [])) == []


class TestServingMonitors:
    """``monitors.serving`` probes every running model server for every live model."""

    @pytest.fixture
    def ws(self, migrated_db_url: str, tmp_path: Path) -> Iterator[Workspace]:
        workspace = Workspace.open(home=tmp_path / "home", db_url=migrated_db_url)
        x = pd.DataFrame(np.random.default_rng(0).normal(size=(60, 2)), columns=["a", "b"])
        model = LogisticRegression().fit(x.to_numpy(), x["a"] > 0)
        Registry.of(workspace).register("churn", model, training_data=x, alias="champion")
        yield workspace
        workspace.store.dispose()

    def _outage(self, ws: Workspace) -> list[AlertRecord]:
        with ws.store.session() as s:
            return [
                a
                for a in s.scalars(select(AlertRecord).where(AlertRecord.state == "firing"))
                if a.labels["alertname"] == "ModelOutage"
            ]

    def test_a_live_model_whose_server_stopped_answering_pages_model_outage(
        self, ws: Workspace, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="shipyard.daemon")
        clock = FakeClock(T0)
        tasks = [t for t in builtin_tasks() if t.name in ("monitors.serving", "alerts.evaluate")]
        loop = Daemon(_context(ws, clock, []), tasks=tasks)
        dead = register_instance(
            ws.store, url="http://127.0.0.1:9", host="127.0.0.1", workers=1, ttl_s=90,
            now=clock.time(), models=["churn"],
        )  # fmt: skip
        for _ in range(3):  # 0, 30, 60 s: pending, then firing after `for: 1m`
            heartbeat_instance(ws.store, dead, clock.time())
            loop.tick()
            clock.advance(30)
        (alert,) = self._outage(ws)
        assert alert.labels["model"] == "churn" and alert.labels["severity"] == "page"
        said = [r.getMessage() for r in caplog.records if r.name == "shipyard.daemon"]
        assert len([m for m in said if m.startswith("model churn:")]) == 1  # a change, not 3
        with ws.store.session() as s:
            finding = s.scalars(
                select(Finding)
                .where(Finding.monitor == "serving.outage")
                .order_by(Finding.id.desc())
            ).first()
        assert finding is not None and "probe failed" in finding.summary

    def test_a_live_model_with_no_running_server_pages_model_outage(self, ws: Workspace) -> None:
        clock = FakeClock(T0)
        tasks = [t for t in builtin_tasks() if t.name in ("monitors.serving", "alerts.evaluate")]
        loop = Daemon(_context(ws, clock, []), tasks=tasks)
        gone = register_instance(  # killed long ago: its heartbeat is past its ttl
            ws.store, url="http://127.0.0.1:9", host="127.0.0.1", workers=1, ttl_s=30,
            now=clock.time() - 600, models=["churn"],
        )  # fmt: skip
        assert gone and live_instances(ws.store, clock.time()) == []
        for _ in range(3):
            loop.tick()
            clock.advance(30)
        assert len(self._outage(ws)) == 1
        with ws.store.session() as s:
            summary = s.scalars(
                select(Finding.summary).where(Finding.monitor == "serving.outage")
            ).first()
        assert summary == "live, but no running model server serves it"


def test_sigterm_stops_cleanly_and_gives_the_lease_up(workspace: Workspace) -> None:
    with workspace.store.session() as s:
        s.add(MetricPoint.of("shipyard_drift_score", {"column": "age"}, time.time(), 0.25))
    proc = subprocess.Popen(
        [sys.executable, "-c", DAEMON_MAIN, "daemon", "--tick", "0.1", "--metrics-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
    )
    try:
        assert proc.stdout is not None
        url = ""
        while not url:
            line = proc.stdout.readline().decode()
            assert line, "the daemon exited before serving /metrics"
            if line.startswith("/metrics on "):
                url = line.split()[-1]
        with urllib.request.urlopen(url, timeout=5) as response:
            scraped = response.read().decode()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with workspace.store.session() as s:
                if s.scalars(select(LeaderLease)).first() is not None:
                    break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert 'shipyard_drift_score{column="age"} 0.25' in scraped
    assert proc.returncode == 0, out.decode()
    assert b"daemon stopped" in out
    with workspace.store.session() as s:
        lease = s.scalars(select(LeaderLease)).one()
    assert lease.expires_at <= time.time()
