"""Training time against the pipeline's history, training failures, and judging each finished
run exactly once (runner hook or daemon)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select, text

from shipyard.monitoring import evaluate_monitors, on_run_finished
from shipyard.monitoring.config import resolve_monitors
from shipyard.monitoring.evaluate import judge_run
from shipyard.monitoring.settings import keep_settings
from shipyard.store.base import new_id
from shipyard.store.monitoring import MonitoredRun
from shipyard.store.tables import Finding, MetricPoint, PipelineRecord, Run, StepRun
from shipyard.workspace import Workspace

HOUR = 3600.0


def add_run(
    ws: Workspace,
    duration_s: float,
    status: str = "succeeded",
    pipeline: str = "train-digits",
    kind: str = "training",
) -> str:
    """A finished run (and its one step) that started now and lasted ``duration_s``; the fake
    clock moves an hour on, so runs are ordered in time."""
    now = ws.clock.time()
    run_id = new_id()
    with ws.store.session() as s:
        if s.get(PipelineRecord, pipeline) is None:
            s.add(PipelineRecord(name=pipeline, kind=kind, file="x.py", spec={}, updated_at=now))
        s.add(
            Run(
                id=run_id,
                pipeline=pipeline,
                kind=kind,
                file="x.py",
                status=status,
                created_at=now,
                started_at=now,
                ended_at=now + duration_s,
                exit_reason="step 'fit' failed: MemoryError" if status == "failed" else None,
            )
        )
        s.flush()
        s.add(
            StepRun(
                run_id=run_id, step="fit", status=status, started_at=now, ended_at=now + duration_s
            )
        )
    ws.clock.advance(HOUR)  # type: ignore[attr-defined]
    return run_id


def series(ws: Workspace, name: str) -> list[tuple[dict[str, object], float, float]]:
    with ws.store.session() as s:
        rows = s.scalars(
            select(MetricPoint).where(MetricPoint.name == name).order_by(MetricPoint.id)
        )
        return [(r.labels, r.ts, r.value) for r in rows]


def history(ws: Workspace, durations: list[float]) -> None:
    for d in durations:
        add_run(ws, d)
    evaluate_monitors(ws.store, ws.clock)


class TestTrainingTime:
    def test_a_run_slower_than_factor_times_the_history_p95_is_flagged(self, ws: Workspace) -> None:
        history(ws, [100.0 + i for i in range(10)])  # 100 … 109 s
        slow = add_run(ws, 300.0)
        checks = judge_run(ws.store, ws.clock, slow)
        assert checks is not None
        time_check = next(c for c in checks if c.monitor == "training_time")
        # p95 of 100…109 by linear interpolation (Hyndman & Fan type 7): 100 + 0.95·9 = 108.55
        assert time_check.evidence["history_p95_s"] == pytest.approx(108.55)
        assert time_check.status == "alert"
        assert "limit 2×" in time_check.summary
        last = series(ws, "shipyard_training_duration_ratio")[-1]
        assert last[0] == {"pipeline": "train-digits"}
        assert last[2] == pytest.approx(300 / 108.55)

    def test_a_run_within_the_factor_is_ok_and_the_factor_is_configurable(
        self, ws: Workspace
    ) -> None:
        history(ws, [100.0 + i for i in range(10)])
        with ws.store.session() as s:
            keep_settings(
                s,
                "train-digits",
                resolve_monitors("training", {"training_time": {"factor": 1.5}}),
                ws.clock.time(),
            )
        checks = judge_run(ws.store, ws.clock, add_run(ws, 170.0))  # 1.57× the p95
        assert checks is not None and checks[0].status == "alert"
        checks = judge_run(ws.store, ws.clock, add_run(ws, 150.0))  # below 1.5× any p95 now
        assert checks is not None and checks[0].status == "ok"

    def test_too_short_a_history_gives_no_verdict_and_no_ratio(self, ws: Workspace) -> None:
        history(ws, [100.0, 101.0, 102.0])
        checks = judge_run(ws.store, ws.clock, add_run(ws, 900.0))
        assert checks is not None
        assert checks[0].status == "ok" and "5 needed to judge" in checks[0].summary
        assert series(ws, "shipyard_training_duration_ratio") == []


class TestTrainingFailures:
    def test_a_failed_run_writes_1_and_a_succeeded_one_0(self, ws: Workspace) -> None:
        failed = add_run(ws, 10.0, "failed")
        ok = add_run(ws, 10.0)
        add_run(ws, 10.0, "cancelled")
        result = evaluate_monitors(ws.store, ws.clock)
        assert result == {"runs_judged": 3, "findings": 3}  # the cancelled run: no verdict
        points = series(ws, "shipyard_run_failed")
        assert [(p[0], p[2]) for p in points] == [
            ({"kind": "training", "pipeline": "train-digits"}, 1.0),
            ({"kind": "training", "pipeline": "train-digits"}, 0.0),
        ]
        with ws.store.session() as s:
            finding = s.scalars(select(Finding).where(Finding.run_id == failed)).one()
            assert finding.status == "alert" and "MemoryError" in finding.summary
            run = s.get(Run, ok)
            assert run is not None
            assert points[1][1] == run.ended_at  # stamped with the run's end, not the judging

    def test_failures_switched_off_in_the_definition_are_not_recorded(
        self, sqlite_ws: Workspace
    ) -> None:
        with sqlite_ws.store.session() as s:
            keep_settings(
                s,
                "train-digits",
                resolve_monitors("training", {"training_failures": False}),
                0.0,
            )
        add_run(sqlite_ws, 10.0, "failed")
        evaluate_monitors(sqlite_ws.store, sqlite_ws.clock)
        assert series(sqlite_ws, "shipyard_run_failed") == []

    def test_data_pipelines_get_no_training_monitors(self, sqlite_ws: Workspace) -> None:
        add_run(sqlite_ws, 10.0, "failed", pipeline="digits-data", kind="data")
        assert evaluate_monitors(sqlite_ws.store, sqlite_ws.clock)["findings"] == 0


class TestJudgedOnce:
    def test_the_runner_hook_and_the_daemon_judge_a_run_once(self, ws: Workspace) -> None:
        run_id = add_run(ws, 10.0, "failed")
        checks = on_run_finished(ws, run_id)
        assert checks is not None and checks[0].status == "alert"
        assert evaluate_monitors(ws.store, ws.clock) == {"runs_judged": 0, "findings": 0}
        assert on_run_finished(ws, run_id) is None
        with ws.store.session() as s:
            assert len(s.scalars(select(MonitoredRun)).all()) == 1
        assert len(series(ws, "shipyard_run_failed")) == 1

    def test_the_daemon_leaves_unfinished_and_old_runs_alone(self, sqlite_ws: Workspace) -> None:
        add_run(sqlite_ws, 10.0)
        sqlite_ws.clock.advance(8 * 86400)  # type: ignore[attr-defined]
        add_run(sqlite_ws, 10.0, "running")
        assert evaluate_monitors(sqlite_ws.store, sqlite_ws.clock)["runs_judged"] == 0

    def test_the_runner_hook_never_raises(self, sqlite_ws: Workspace) -> None:
        run_id = add_run(sqlite_ws, 10.0, "failed")
        assert on_run_finished(sqlite_ws, "no-such-run") is None
        with sqlite_ws.store.session() as s:  # a database that lost the table
            s.execute(text("DROP TABLE monitored_runs"))
        assert on_run_finished(sqlite_ws, run_id) is None

    def test_runner_and_daemon_at_the_same_moment_judge_a_run_once(self, ws: Workspace) -> None:
        run_ids = [add_run(ws, 10.0, "failed") for _ in range(5)]
        barrier = threading.Barrier(2)
        results: list[list[object]] = [[], []]

        def judge(slot: int) -> None:
            barrier.wait()
            for run_id in run_ids:
                results[slot].append(judge_run(ws.store, ws.clock, run_id))

        threads = [threading.Thread(target=judge, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        judged = [a if a is not None else b for a, b in zip(*results, strict=True)]
        assert all(j is not None for j in judged)
        assert [(a is None) != (b is None) for a, b in zip(*results, strict=True)] == [True] * 5
        assert len(series(ws, "shipyard_run_failed")) == 5
