"""Runs judged while they run: a real step that goes to sleep raises RunStalled within the
configured silence and resolves when its run ends; a run past its history's p95 raises RunSlow
on a fake-clock timeline and resolves when it ends."""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path

import numpy as np
from sqlalchemy import select

from monitoring.conftest import only
from shipyard.alerting.cycle import evaluate
from shipyard.cli.runs import run_services
from shipyard.monitoring.config import resolve_monitors
from shipyard.monitoring.evaluate import judge_run
from shipyard.monitoring.progress import watch_running_runs
from shipyard.monitoring.settings import keep_settings
from shipyard.pipelines import Runner
from shipyard.pipelines.loader import load_pipeline
from shipyard.store.alerting import AlertRecord
from shipyard.store.base import new_id
from shipyard.store.tables import PipelineRecord, Run
from shipyard.workspace import Workspace

STALL_S = 1.0

SLEEPER = """
import os, time
from pathlib import Path
from shipyard.pipelines import Pipeline, step

train = Pipeline("sleepy", kind="training", monitors={"run_progress": {"stall_s": %(stall)r}})


@step()
def fit(folder: str):
    here = Path(folder)
    deadline = time.time() + 30
    for i in range(5):  # alive: a line every 0.1 s
        print("epoch", i, flush=True)
        (here / "printing").touch()
        time.sleep(0.1)
    (here / "sleeping").touch()
    while not (here / "release").exists() and time.time() < deadline:
        time.sleep(0.05)  # hung: nothing written


@train
def build(folder: str = "."):
    fit(folder=folder)
"""


def alert_states(ws: Workspace, rule: str) -> list[str]:
    with ws.store.session() as s:
        rows = s.scalars(select(AlertRecord).where(AlertRecord.rule == f"{rule}/ticket"))
        return [r.state for r in rows]


def wait_for(predicate, timeout_s: float, every_s: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every_s)
    return predicate()


def test_a_sleeping_step_raises_run_stalled_in_time_and_resolves_after(
    workspace: Workspace, tmp_path: Path
) -> None:
    ws = workspace
    file = tmp_path / "sleepy.py"
    file.write_text(textwrap.dedent(SLEEPER % {"stall": STALL_S}), encoding="utf-8")
    folder = tmp_path / "flags"
    folder.mkdir()
    cfg = only("RunStalled", home=tmp_path)
    path, pipeline = load_pipeline(f"{file}:sleepy")
    ended: list[str] = []

    def run() -> None:
        with Runner(ws, **run_services(ws)) as runner:
            ended.append(runner.run(path, pipeline, {"folder": str(folder)}).status)

    runner = threading.Thread(target=run)
    runner.start()
    try:

        def tick() -> list[str]:
            watch_running_runs(ws.store, ws.clock)
            evaluate(ws.store, cfg, ws.clock.time())
            return alert_states(ws, "RunStalled")

        # while the step prints, it is not stalled
        assert wait_for(lambda: (folder / "printing").exists(), 20)
        while not (folder / "sleeping").exists():
            assert "firing" not in tick()
            time.sleep(0.1)
        asleep = time.monotonic()
        assert wait_for(lambda: "firing" in tick(), STALL_S + 10, every_s=0.1)
        took = time.monotonic() - asleep
        # the last line came 0.1 s before the "sleeping" mark: silent for stall_s, then flagged
        assert STALL_S - 0.2 <= took <= STALL_S + 5
    finally:
        (folder / "release").touch()
        runner.join(30)
    assert ended == ["succeeded"]
    # the runner judged the ended run: its progress series went to 0 and the alert resolves
    evaluate(ws.store, cfg, ws.clock.time())
    assert alert_states(ws, "RunStalled") == ["resolved"]


def _run(ws: Workspace, started: float, ended: float | None) -> str:
    run_id = new_id()
    with ws.store.session() as s:
        if s.get(PipelineRecord, "train") is None:
            s.add(PipelineRecord(name="train", kind="training", file="x.py", updated_at=started))
            keep_settings(s, "train", resolve_monitors("training"), started)
        s.add(
            Run(
                id=run_id,
                pipeline="train",
                kind="training",
                file="x.py",
                status="running" if ended is None else "succeeded",
                created_at=started,
                started_at=started,
                ended_at=ended,
                heartbeat_at=started,
            )
        )
    return run_id


def test_a_run_past_its_history_p95_raises_run_slow_until_it_ends(
    ws: Workspace, tmp_path: Path
) -> None:
    clock = ws.clock
    for i in range(5):  # history: 100 … 104 s
        t = clock.time()
        _run(ws, t, t + 100 + i)
        clock.advance(3600)  # type: ignore[attr-defined]
    cfg = only("RunSlow", home=tmp_path)
    start = clock.time()
    running = _run(ws, start, None)
    seen = []
    for _ in range(8):  # every 30 s the runner heartbeats and the daemon watches
        clock.advance(30)  # type: ignore[attr-defined]
        with ws.store.session() as s:
            s.get(Run, running).heartbeat_at = clock.time()  # type: ignore[union-attr]
        (check,) = watch_running_runs(ws.store, clock)
        evaluate(ws.store, cfg, clock.time())
        seen.append((check.evidence.get("ratio"), alert_states(ws, "RunSlow")))
    p95 = float(np.percentile([100, 101, 102, 103, 104], 95))
    assert seen[2][0] == 90 / p95 and seen[2][1] == []  # 90 s: within its history
    assert seen[3][0] == 120 / p95 and seen[3][1] == ["firing"]  # 120 s: past the p95
    assert check.status == "alert" and "the p95" in check.summary
    with ws.store.session() as s:
        row = s.get(Run, running)
        assert row is not None
        row.status, row.ended_at = "succeeded", clock.time()
    judge_run(ws.store, clock, running)
    clock.advance(1)  # type: ignore[attr-defined]
    evaluate(ws.store, cfg, clock.time())
    assert alert_states(ws, "RunSlow") == ["resolved"]
    assert watch_running_runs(ws.store, clock) == []
