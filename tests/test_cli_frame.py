"""The ``shipyard`` command as a user meets it: a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from shipyard import __version__


def shipyard(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipyard", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_version_and_help() -> None:
    assert shipyard("--version").stdout.strip() == f"shipyard {__version__}"
    out = shipyard("--help")
    assert out.returncode == 0 and "init" in out.stdout


def test_init_creates_the_workspace(tmp_path: Path) -> None:
    out = shipyard("init")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "home" / "shipyard.db").exists()


def test_a_broken_config_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "shipyard.toml").write_text("[serving]\nport = -1\n")
    out = shipyard("init")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "serving.port" in out.stderr


def test_an_unknown_command_suggests_help() -> None:
    out = shipyard("inti")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr


def test_empty_listings_say_what_to_do_and_json_stays_a_list() -> None:
    assert shipyard("init").returncode == 0
    assert "no pipelines yet" in shipyard("pipelines", "list").stdout
    assert "no runs yet" in shipyard("runs", "list").stdout
    assert shipyard("runs", "list", "--json").stdout.strip() == "[]"


def test_help_paragraphs_are_reflowed_but_examples_keep_their_lines() -> None:
    from shipyard.cli import reflow

    doc = """First line
    goes on.

    Second paragraph wraps
    here and here.

    Example:
        shipyard run x.py
        shipyard runs list
    """
    assert reflow(doc) == (
        "First line goes on.\n\nSecond paragraph wraps here and here.\n\n"
        "Example:\n    shipyard run x.py\n    shipyard runs list"
    )
    out = subprocess.run(
        [sys.executable, "-m", "shipyard", "serve", "--help"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}
        | ({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
    ).stdout
    assert "With --pool the server holds a quota lease while it runs" in " ".join(out.split())
