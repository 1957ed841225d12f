"""What a run hands on when it ends: its run-finished listeners, and the monitor settings it
was created with (the runner imports no monitoring to do either)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from shipyard.pipelines.records import run_status
from shipyard.pipelines.runner import RunResult
from shipyard.store.tables import Run
from shipyard.workspace import Workspace

WriteFile = Callable[..., Path]
RunFile = Callable[..., RunResult]

FLOW = """
@step()
def one() -> int:
    return 1

pipeline = Pipeline("told", kind="training", monitors={"training_time": {"factor": 3}})

@pipeline
def build():
    one()
"""


class TestListeners:
    def test_each_listener_hears_once_that_the_recorded_run_ended(
        self, pipeline_file: WriteFile, run_file: RunFile, workspace: Workspace
    ) -> None:
        heard: list[tuple[str, str | None]] = []

        def listener(ws: Workspace, run_id: str) -> None:
            heard.append((run_id, run_status(ws.store, run_id)))

        result = run_file(pipeline_file(FLOW), on_finished=[listener, listener])
        assert result.status == "succeeded"
        assert heard == [(result.run_id, "succeeded")] * 2

    def test_a_listener_that_raises_fails_neither_the_run_nor_the_next_listener(
        self, pipeline_file: WriteFile, run_file: RunFile
    ) -> None:
        heard: list[str] = []

        def broken(ws: Workspace, run_id: str) -> None:
            raise RuntimeError("monitoring is down")

        result = run_file(
            pipeline_file(FLOW), on_finished=[broken, lambda ws, run_id: heard.append(run_id)]
        )
        assert result.status == "succeeded"
        assert heard == [result.run_id]


def test_a_run_keeps_the_monitor_settings_its_pipeline_had_when_it_was_created(
    pipeline_file: WriteFile, run_file: RunFile, workspace: Workspace
) -> None:
    result = run_file(pipeline_file(FLOW), on_finished=[])
    with workspace.store.session() as s:
        run = s.get(Run, result.run_id)
        assert run is not None and run.monitors is not None
    assert run.monitors["kind"] == "training"
    assert run.monitors["monitors"]["training_time"]["options"]["factor"] == 3.0
