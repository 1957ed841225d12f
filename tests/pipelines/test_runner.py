"""The runner with the local executor: parallelism, retries, timeouts, crashes, lineage."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from sqlalchemy import select

from shipyard.cli.runs import run_services
from shipyard.pipelines import LocalAdmission, Runner
from shipyard.pipelines.loader import load_pipeline
from shipyard.pipelines.records import get_run
from shipyard.pipelines.runner import RunResult
from shipyard.store.tables import Lineage, Run, StepRun
from shipyard.workspace import Workspace

WriteFile = Callable[..., Path]
RunFile = Callable[..., RunResult]


def steps_of(ws: Workspace, run_id: str) -> dict[str, dict[str, object]]:
    return {s["step"]: s for s in get_run(ws.store, run_id)["steps"]}


def gone(pid: object) -> bool:
    assert isinstance(pid, int)
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class TestSuccess:
    def test_outputs_feed_inputs_and_lineage_is_recorded(
        self, pipeline_file: WriteFile, run_file: RunFile, workspace: Workspace
    ) -> None:
        f = pipeline_file(
            """
            import pandas as pd

            @step()
            def load(rows: int = 3) -> pd.DataFrame:
                log.info("loaded", rows=rows)
                print("plain print")
                return pd.DataFrame({"x": list(range(rows))})

            @step()
            def total(df: pd.DataFrame) -> int:
                return int(df["x"].sum())

            pipeline = Pipeline("sums", kind="data")

            @pipeline
            def build(rows: int = 3):
                return total(load(rows))
            """
        )
        result = run_file(f, {"rows": 5})
        assert result.status == "succeeded", result.exit_reason
        steps = steps_of(workspace, result.run_id)
        assert steps["load"]["status"] == steps["total"]["status"] == "succeeded"
        assert steps["total"]["input_rows"] == 5
        assert steps["total"]["input_bytes"] > 0  # type: ignore[operator]
        assert steps["load"]["peak_rss_bytes"] > 0  # type: ignore[operator]
        assert steps["load"]["cpu_seconds"] is not None
        with workspace.store.session() as s:
            run = s.get(Run, result.run_id)
            assert run is not None and run.params == {"rows": 5}
            edges = s.execute(
                select(StepRun.step, Lineage.direction, Lineage.name, Lineage.digest).join(
                    StepRun, StepRun.id == Lineage.step_run_id
                )
            ).all()
        produced = {(e[0], e[2]): e[3] for e in edges if e[1] == "produced"}
        consumed = {(e[0], e[2]): e[3] for e in edges if e[1] == "consumed"}
        assert set(produced) == {("load", "output"), ("total", "output")}
        assert consumed == {("total", "load:output"): produced[("load", "output")]}
        digest = produced[("total", "output")]
        assert workspace.artifacts.get_object(digest, "application/json") == 10
        log = Path(str(steps["load"]["log_path"])).read_text()
        assert "plain print" in log and '"message": "loaded"' in log and '"rows": 5' in log

    def test_independent_steps_overlap_in_time(
        self, pipeline_file: WriteFile, run_file: RunFile, workspace: Workspace
    ) -> None:
        f = pipeline_file(
            """
            @step(resources=Resources(cpu="500m"))
            def nap(seconds: float) -> float:
                time.sleep(seconds)
                return seconds

            pipeline = Pipeline("naps", kind="data")

            @pipeline
            def build():
                nap(0.6)
                nap(0.6)
            """
        )
        result = run_file(f)
        assert result.status == "succeeded", result.exit_reason
        a, b = steps_of(workspace, result.run_id).values()
        assert a["started_at"] < b["ended_at"] and b["started_at"] < a["ended_at"]  # type: ignore[operator]

    def test_admission_serialises_steps_that_do_not_fit_together(
        self, pipeline_file: WriteFile, run_file: RunFile, workspace: Workspace
    ) -> None:
        f = pipeline_file(
            """
            @step(resources=Resources(cpu=1))
            def nap(seconds: float) -> float:
                time.sleep(seconds)
                return seconds

            pipeline = Pipeline("naps", kind="data")

            @pipeline
            def build():
                nap(0.3)
                nap(0.3)
            """
        )
        result = run_file(f, admission=LocalAdmission({"cpu": 1.0}))
        assert result.status == "succeeded", result.exit_reason
        a, b = sorted(steps_of(workspace, result.run_id).values(), key=lambda s: s["started_at"])  # type: ignore[arg-type, return-value]
        assert b["started_at"] >= a["ended_at"]  # type: ignore[operator]

    def test_step_declaring_more_than_the_machine_fails_with_quota_message(
        self, pipeline_file: WriteFile, run_file: RunFile, workspace: Workspace
    ) -> None:
        f = pipeline_file(
            """
            @step(resources=Resources(cpu=64))
            def big() -> int:
                return 1

            pipeline = Pipeline("big", kind="training")

            @pipeline
            def build():
                big()
            """
        )
        result = run_file(f, admission=LocalAdmission({"cpu": 2.0}))
        assert result.status == "failed"
        reason = steps_of(workspace, result.run_id)["big"]["exit_reason"]
        assert "cannot ever grant cpu=64" in str(reason)

    def test_latest_output_reads_another_pipelines_run_and_records_it(
        self, pipeline_file: WriteFile, run_file: RunFile, workspace: Workspace
    ) -> None:
        data = pipeline_file(
            """
            @step(outputs=("train", "test"))
            def split() -> tuple[list[int], list[int]]:
                return [1, 2, 3], [4]

            pipeline = Pipeline("numbers", kind="data")

            @pipeline
            def build():
                split()
            """,
            name="data",
        )
        training = pipeline_file(
            """
            @step()
            def fit() -> int:
                return sum(latest_output("numbers", "split", "train"))

            pipeline = Pipeline("fit-numbers", kind="training")

            @pipeline
            def build():
                fit()
            """,
            name="training",
        )
        first = run_file(data)
        result = run_file(training)
        assert result.status == "succeeded", result.exit_reason
        fit = steps_of(workspace, result.run_id)["fit"]
        consumed = [e for e in fit["lineage"] if e["direction"] == "consumed"]  # type: ignore[attr-defined]
        split = steps_of(workspace, first.run_id)["split"]
        train_digest = next(e["digest"] for e in split["lineage"] if e["name"] == "train")  # type: ignore[attr-defined]
        assert [(e["name"], e["digest"]) for e in consumed] == [
            ("numbers/split/train", train_digest)
        ]
        produced = next(e for e in fit["lineage"] if e["direction"] == "produced")  # type: ignore[attr-defined]
        assert workspace.artifacts.get_object(produced["digest"], produced["media_type"]) == 6


class TestFailures:
    def test_a_step_that_fails_once_is_retried_and_succeeds(
        self, pipeline_file: WriteFile, run_file: RunFile, workspace: Workspace, tmp_path: Path
    ) -> None:
        f = pipeline_file(
            f"""
            MARK = Path({str(tmp_path / "failed-once")!r})

            @step(retries=2, retry_backoff_s=0.05)
            def flaky() -> str:
                if not MARK.exists():
                    MARK.touch()
                    raise ConnectionError("first try fails")
                return "ok"

            pipeline = Pipeline("flaky", kind="data")

            @pipeline
            def build():
                flaky()
            """
        )
        result = run_file(f)
        assert result.status == "succeeded", result.exit_reason
        step = steps_of(workspace, result.run_id)["flaky"]
        assert step["status"] == "succeeded" and step["attempt"] == 2
        log = Path(str(step["log_path"])).read_text()
        assert "ConnectionError: first try fails" in log and "retrying" in log

    def test_timeout_kills_the_step_and_its_children(
        self, pipeline_file: WriteFile, run_file: RunFile, workspace: Workspace, tmp_path: Path
    ) -> None:
        pidfile = tmp_path / "grandchild.pid"
        f = pipeline_file(
            f"""
            import subprocess

            @step(timeout_s=0.5)
            def hang() -> None:
                child = subprocess.Popen(["sleep", "60"])
                Path({str(pidfile)!r}).write_text(str(child.pid))
                time.sleep(60)

            pipeline = Pipeline("hang", kind="training")

            @pipeline
            def build():
                hang()
            """
        )
        result = run_file(f, kill_grace_s=1.0)
        assert result.status == "failed"
        step = steps_of(workspace, result.run_id)["hang"]
        assert step["status"] == "failed"
        assert step["exit_reason"] == "timed out after 0.5s"
        assert step["ended_at"] - step["started_at"] < 5  # type: ignore[operator]
        assert gone(step["pid"])
        assert gone(int(pidfile.read_text()))

    @pytest.mark.parametrize(
        ("body", "reason", "code"),
        [
            ("raise ValueError('bad rows')", "ValueError: bad rows", 1),
            ("os.abort()", "killed by signal SIGABRT", -6),
            ("sys.exit(3)", "exited with code 3", 3),
        ],
        ids=["exception", "abort", "exit-3"],
    )
    def test_a_crash_is_recorded_and_cancels_the_rest(
        self,
        pipeline_file: WriteFile,
        run_file: RunFile,
        workspace: Workspace,
        body: str,
        reason: str,
        code: int,
    ) -> None:
        f = pipeline_file(
            f"""
            @step(resources=Resources(cpu="100m"))
            def crash() -> int:
                time.sleep(0.3)
                {body}

            @step(resources=Resources(cpu="100m"))
            def slow() -> int:
                time.sleep(30)
                return 1

            @step(resources=Resources(cpu="100m"))
            def after(x: int) -> int:
                return x

            pipeline = Pipeline("crashy", kind="data")

            @pipeline
            def build():
                after(crash())
                slow()
            """
        )
        result = run_file(f, kill_grace_s=1.0)
        assert result.status == "failed"
        assert result.exit_reason == f"step 'crash' failed: {reason}"
        steps = steps_of(workspace, result.run_id)
        assert steps["crash"]["status"] == "failed"
        assert steps["crash"]["exit_reason"] == reason
        assert steps["crash"]["exit_code"] == code
        assert steps["slow"]["status"] == "cancelled"
        assert gone(steps["slow"]["pid"])
        assert steps["after"]["status"] == "cancelled"
        assert steps["after"]["pid"] is None
        if code == 1:
            assert "Traceback" in Path(str(steps["crash"]["log_path"])).read_text()


@pytest.mark.postgres
def test_run_records_on_postgresql(pg_workspace: Workspace, pipeline_file: WriteFile) -> None:
    f = pipeline_file(
        """
        @step()
        def one() -> int:
            return 1

        @step()
        def two(x: int) -> int:
            return x + 1

        pipeline = Pipeline("pg-run", kind="validation")

        @pipeline
        def build():
            two(one())
        """
    )
    file, pipeline = load_pipeline(str(f))
    try:
        with Runner(pg_workspace, **run_services(pg_workspace)) as runner:
            result = runner.run(file, pipeline)
        info = get_run(pg_workspace.store, result.run_id[:6])
    finally:
        pg_workspace.store.dispose()
    assert result.status == "succeeded", result.exit_reason
    assert [(s["step"], s["status"]) for s in info["steps"]] == [
        ("one", "succeeded"),
        ("two", "succeeded"),
    ]
    assert {e["direction"] for e in info["steps"][1]["lineage"]} == {"consumed", "produced"}
