"""``quota estimate --input-rows`` says what it scaled and what it could not (issue 19): it used
to say "scaled to 100,000 rows" and then "not scaled" for every step."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from shipyard.cli.quota import register
from shipyard.store.tables import PipelineRecord, Run, StepRun
from shipyard.workspace import Workspace


def history(ws: Workspace, sizes: list[int]) -> None:
    """Succeeded runs of 'etl' whose step 'load' read ``sizes`` rows; memory ∝ rows."""
    with ws.store.session() as s:
        s.add(PipelineRecord(name="etl", kind="data", file="etl.py", updated_at=0.0))
        for i, rows in enumerate(sizes):
            run = Run(pipeline="etl", kind="data", file="etl.py", status="succeeded", created_at=i)
            s.add(run)
            s.flush()
            for step in ("load", "clean"):
                s.add(
                    StepRun(
                        run_id=run.id,
                        step=step,
                        status="succeeded",
                        started_at=i * 100.0,
                        ended_at=i * 100.0 + 10,
                        peak_rss_bytes=1000 * rows,
                        cpu_seconds=5.0,
                        input_rows=rows,
                    )
                )


def estimate(*args: str) -> str:
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["quota", "estimate", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_one_input_size_is_not_claimed_as_scaled(workspace: Workspace) -> None:
    history(workspace, [1000, 1000, 1000])
    out = estimate("etl", "--input-rows", "100000")
    assert "scaled to 100,000 rows" not in out.replace("not scaled to 100,000 rows", "")
    assert "not scaled to 100,000 rows: no step has runs of 3 distinct input sizes" in out
    assert out.count("not scaled") == 2  # the headline, and one note naming the steps
    assert "load, clean" in out or "clean, load" in out


def test_enough_sizes_are_scaled_and_said_so(workspace: Workspace) -> None:
    history(workspace, [1000, 2000, 5000, 10000])
    out = estimate("etl", "--input-rows", "100000")
    assert "scaled to 100,000 rows" in out and "not scaled" not in out


def test_without_input_rows_nothing_is_said_about_scaling(workspace: Workspace) -> None:
    history(workspace, [1000, 2000, 5000])
    assert "scaled" not in estimate("etl")
