"""``shipyard run`` / ``runs`` / ``pipelines`` on an app built with ``register(app)``, and
Ctrl-C on a real ``run`` process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import typer
from typer.testing import CliRunner

from shipyard.cli import Group, runs
from shipyard.pipelines.records import get_run
from shipyard.workspace import Workspace

APP_SOURCE = """
import typer
from shipyard.cli import runs

app = typer.Typer(pretty_exceptions_enable=False)

@app.callback()
def root() -> None:
    pass

runs.register(app)

if __name__ == "__main__":
    app()
"""

SIMPLE = """
@step()
def make(n: int = 2) -> list[int]:
    log.info("making", n=n)
    return list(range(n))

@step()
def count(xs: list[int]) -> int:
    return len(xs)

pipeline = Pipeline("counting", kind="data", schedule="0 3 * * *")

@pipeline
def build(n: int = 2, fast: bool = False):
    return count(make(n))
"""


@pytest.fixture
def app() -> typer.Typer:
    # the CLI's root group: errors become one line
    app = typer.Typer(cls=Group, pretty_exceptions_enable=False)

    @app.callback()
    def root() -> None:
        """Test app."""

    runs.register(app)
    return app


def invoke(app: typer.Typer, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


class TestRunCommand:
    def test_run_then_list_show_logs(
        self, app: typer.Typer, pipeline_file: Callable[..., Path]
    ) -> None:
        f = pipeline_file(SIMPLE)
        code, out, err = invoke(app, "run", f"{f}:counting", "--param", "n=4")
        assert code == 0, err
        assert "succeeded" in out
        code, out, _ = invoke(app, "runs", "list", "--json")
        listed = json.loads(out)
        assert [(r["pipeline"], r["status"], r["params"]) for r in listed] == [
            ("counting", "succeeded", {"n": 4, "fast": False})
        ]
        run_id = listed[0]["id"]
        code, out, _ = invoke(app, "runs", "show", run_id[:5], "--json")
        shown = json.loads(out)
        assert [s["status"] for s in shown["steps"]] == ["succeeded", "succeeded"]
        code, out, _ = invoke(app, "runs", "logs", run_id, "--step", "make", "--json")
        lines = [json.loads(line) for line in out.splitlines()]
        making = [x for x in lines if x["message"] == "making"]
        assert making and making[0]["n"] == 4 and making[0]["run_id"] == run_id
        code, out, _ = invoke(app, "pipelines", "list", "--json")
        assert json.loads(out)[0]["name"] == "counting"
        assert json.loads(out)[0]["schedule"] == "0 3 * * *"

    def test_follow_on_a_finished_run_prints_every_step_and_ends(
        self, app: typer.Typer, pipeline_file: Callable[..., Path]
    ) -> None:
        f = pipeline_file(SIMPLE)
        invoke(app, "run", str(f))
        run_id = json.loads(invoke(app, "runs", "list", "--json")[1])[0]["id"]
        code, out, _ = invoke(app, "runs", "logs", run_id, "--follow")
        assert code == 0
        assert "[make]" in out and "[count]" in out and "making" in out

    def test_logs_of_an_unknown_step_lists_the_steps(
        self, app: typer.Typer, pipeline_file: Callable[..., Path]
    ) -> None:
        f = pipeline_file(SIMPLE)
        invoke(app, "run", str(f))
        run_id = json.loads(invoke(app, "runs", "list", "--json")[1])[0]["id"]
        code, _, err = invoke(app, "runs", "logs", run_id, "--step", "nope")
        assert code == 1
        assert "its steps: make, count" in err

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["run", "missing.py"], "no pipeline file named 'missing.py'"),
            (["run", "FILE:nope"], "no pipeline named 'nope'"),
            (["run", "FILE", "--param", "n=many"], "parameter 'n' expects int, got 'many'"),
            (["run", "FILE", "--param", "fast=maybe"], "parameter 'fast' expects bool"),
            (["run", "FILE", "--param", "m=1"], "known parameters: n, fast"),
            (["run", "FILE", "--executor", "nomad"], "unknown executor 'nomad'"),
            (["runs", "show", "abc123"], "no run named 'abc123'"),
            (["runs", "show", "zz"], "is not a run id"),
        ],
    )
    def test_bad_input_is_one_clear_line(
        self,
        app: typer.Typer,
        pipeline_file: Callable[..., Path],
        args: list[str],
        message: str,
    ) -> None:
        f = pipeline_file(SIMPLE)
        args = [a.replace("FILE", str(f)) for a in args]
        Workspace.open()  # read-only commands refuse a missing workspace (issue 19)
        code, out, err = invoke(app, *args)
        assert code != 0
        assert message in err
        assert len(err.strip().splitlines()) == 1
        assert "Traceback" not in out + err

    def test_failed_run_exits_non_zero_with_reason(
        self, app: typer.Typer, pipeline_file: Callable[..., Path]
    ) -> None:
        f = pipeline_file(
            """
            @step()
            def boom() -> None:
                raise KeyError("col")

            pipeline = Pipeline("boom", kind="training")

            @pipeline
            def build():
                boom()
            """
        )
        code, out, _ = invoke(app, "run", str(f))
        assert code == 1
        assert "step 'boom' failed: KeyError: 'col'" in out


def test_ctrl_c_cancels_the_run_and_leaves_no_step_process(
    pipeline_file: Callable[..., Path], tmp_path: Path, workspace: Workspace
) -> None:
    f = pipeline_file(
        """
        @step(resources=Resources(cpu="100m"))
        def sleepy(seconds: float) -> float:
            time.sleep(seconds)
            return seconds

        @step()
        def after(a: float, b: float) -> float:
            return a + b

        pipeline = Pipeline("sleepy", kind="data")

        @pipeline
        def build():
            after(sleepy(60), sleepy(60))
        """
    )
    script = tmp_path / "cli_app.py"
    script.write_text(APP_SOURCE)
    proc = subprocess.Popen(
        [sys.executable, str(script), "run", str(f)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": "120"},
    )
    deadline = time.monotonic() + 60
    running: list[dict[str, object]] = []
    run_id = None
    while time.monotonic() < deadline:
        from shipyard.pipelines.records import list_runs

        listed = list_runs(workspace.store)
        if listed:
            run_id = listed[0]["id"]
            steps = get_run(workspace.store, run_id)["steps"]
            running = [s for s in steps if s["status"] == "running" and s["pid"]]
            if len(running) == 2:
                break
        time.sleep(0.1)
    assert run_id is not None and len(running) == 2
    pids = [int(str(s["pid"])) for s in running]
    assert all(psutil.pid_exists(p) for p in pids)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err.decode()
    info = get_run(workspace.store, run_id)
    assert info["status"] == "cancelled"
    assert [s["status"] for s in info["steps"]] == ["cancelled"] * 3
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
