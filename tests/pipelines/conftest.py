"""Fixtures for pipeline tests: pipeline files written into the test's folder, and a runner."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from shipyard.cli.runs import run_services
from shipyard.pipelines import Runner
from shipyard.pipelines.loader import load_pipeline
from shipyard.pipelines.runner import RunResult
from shipyard.workspace import Workspace

HEADER = """
import os, sys, time
from pathlib import Path
from shipyard.pipelines import Pipeline, Resources, step, log, latest_output
"""


@pytest.fixture
def pipeline_file(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a pipeline file (the DSL names are imported already) and return its path."""

    def write(source: str, name: str = "flow") -> Path:
        path = tmp_path / f"{name}.py"
        path.write_text(HEADER + textwrap.dedent(source), encoding="utf-8")
        return path

    return write


@pytest.fixture
def run_file(workspace: Workspace) -> Callable[..., RunResult]:
    """Run ``FILE[:PIPELINE]`` in the SQLite workspace, wired as ``shipyard run`` wires it, and
    return the result."""

    def run(target: str | Path, params: dict[str, object] | None = None, **kw: object) -> RunResult:
        file, pipeline = load_pipeline(str(target))
        with Runner(workspace, **(run_services(workspace) | kw)) as runner:
            return runner.run(file, pipeline, params)

    return run
