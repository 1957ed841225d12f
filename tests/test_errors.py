"""One error path (issue 12): the CLI prints any error as one line with its class's exit code.
And the one unknown-name line (issue 19): ``no <kind> named 'X'``, with the closest names."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli_testkit import shipyard
from shipyard import errors
from shipyard.cli import Group
from shipyard.errors import NotFound
from shipyard.workspace import Workspace


def test_an_unknown_name_reads_the_same_for_every_kind() -> None:
    assert str(NotFound("model", "cancr")) == "no model named 'cancr'"
    assert str(NotFound("pool", "x", "declare it")) == "no pool named 'x'; declare it"


def test_close_candidates_are_suggested_best_first() -> None:
    err = NotFound("model", "cancr", candidates=["digits", "cancer", "canceled-v2"])
    assert str(err) == "no model named 'cancr'; did you mean 'cancer'?"
    assert err.suggestions == ["cancer"]


def test_several_close_names_and_a_hint() -> None:
    err = NotFound("pipeline", "digits-dat", "see pipelines list", ["digits-data", "digits-date"])
    assert str(err).startswith("no pipeline named 'digits-dat'; did you mean 'digits-dat")
    assert " or " in str(err) and str(err).endswith("; see pipelines list")


def test_nothing_close_suggests_nothing() -> None:
    assert str(NotFound("rollout", "zzz", candidates=["a1b2c3"])) == "no rollout named 'zzz'"


# -- the CLI: one line and the class's exit code, for any command ------------------------------


class Refused(errors.ShipyardError):
    exit_code = 7


def test_the_cli_exits_with_the_code_the_class_names() -> None:
    app = typer.Typer(cls=Group)
    app.callback()(lambda: None)

    @app.command()
    def go() -> None:
        raise Refused("the door is [shut]")  # markup-like text is printed as it is

    result = CliRunner().invoke(app, ["go"])
    assert result.exit_code == 7
    assert result.stderr == "error: the door is [shut]\n" and result.stdout == ""


def one_line(out: subprocess.CompletedProcess[str], exc: errors.ShipyardError) -> None:
    """``out`` is the CLI's answer to ``exc``: its class's exit code and one ``error:`` line."""
    assert out.returncode == type(exc).exit_code, out.stderr
    assert out.stderr == f"error: {exc}\n", out.stderr
    assert out.stdout == ""


class TestRealCommands:
    """Each error reaches the user the same way, through a real ``shipyard`` process."""

    def test_a_missing_workspace_is_a_config_error(self, tmp_path: Path) -> None:
        with pytest.raises(errors.ConfigError) as caught:
            Workspace.open(create=False)
        one_line(shipyard("runs", "list", cwd=tmp_path), caught.value)

    def test_an_unknown_run_is_not_found(self, workspace: Workspace, tmp_path: Path) -> None:
        from shipyard.pipelines.records import get_run

        with pytest.raises(errors.NotFound) as caught:
            get_run(workspace.store, "abc123")
        one_line(shipyard("runs", "show", "abc123", cwd=tmp_path), caught.value)

    def test_a_file_of_unknown_type_is_invalid_input(self, tmp_path: Path) -> None:
        (tmp_path / "data.xyz").write_text("a,b\n1,2\n")
        exc = errors.InvalidInput("cannot read data.xyz: expected a .csv or .parquet file")
        one_line(shipyard("profile", "data.xyz", "--out", "p.json", cwd=tmp_path), exc)

    def test_a_file_without_a_pipeline_is_a_pipeline_definition_error(self, tmp_path: Path) -> None:
        from shipyard.pipelines.loader import load_pipeline

        (tmp_path / "nothing.py").write_text("x = 1\n")
        with pytest.raises(errors.PipelineDefinitionError) as caught:
            load_pipeline("nothing.py")
        one_line(shipyard("run", "nothing.py", cwd=tmp_path), caught.value)
