"""Every command's ``--help`` at 80 columns and piped: no traceback, no word broken across
lines, no ``<bool>`` on a flag, and help for every argument and option (issue 19).

The commands are enumerated from the Typer app, so a new command is checked without being
listed here.
"""

from __future__ import annotations

from typing import Any

import pytest
from rich.text import Text
from typer.testing import CliRunner

from cli_testkit import WIDTH, broken, command_tree, lines_wider_than, shipyard, words
from shipyard.cli import app

TREE = command_tree()


def command_at(path: tuple[str, ...]) -> Any:
    return TREE[path]


def plain(markup: str | None) -> str:
    return Text.from_markup(markup or "").plain


ALL = list(TREE)


def test_the_app_has_the_commands_the_readme_uses() -> None:
    assert {("run",), ("drift",), ("runs", "logs"), ("quota", "estimate")} <= set(ALL)


@pytest.mark.parametrize("path", ALL, ids=lambda p: " ".join(p) or "shipyard")
def test_help_at_80_columns_piped_is_whole(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH)})
    out = result.output
    assert result.exit_code == 0, out
    assert "Traceback" not in out
    assert lines_wider_than(out, WIDTH) == []
    command = command_at(path)
    expected = words(plain(command.help).split("\b")[0])
    for param in command.params:
        expected |= words(plain(getattr(param, "help", None)))
        if param.param_type_name == "option":
            expected |= set(param.opts)
    expected |= set(getattr(command, "commands", {}))
    assert broken(out, expected) == []
    assert [line for line in out.splitlines() if "<bool>" in line] == []


@pytest.mark.parametrize("path", [p for p in ALL if p], ids=lambda p: " ".join(p))
def test_every_argument_and_option_has_help(path: tuple[str, ...]) -> None:
    command = command_at(path)
    missing = [p.name for p in command.params if not getattr(p, "help", None)]
    assert missing == [], f"shipyard {' '.join(path)}: no help for {missing}"


def test_help_in_a_real_process_is_the_same() -> None:
    out = shipyard("drift", "--help")
    assert out.returncode == 0 and "Traceback" not in out.stderr
    assert broken(out.stdout, ["--fail-on-drift", "self-contained", "Significance"]) == []
    assert lines_wider_than(out.stdout, WIDTH) == []
