"""Running ``shipyard`` as a user does, and reading what it printed.

The command is a real process with its output piped (as in a CI log) and ``COLUMNS=80`` (a
narrow terminal): the two places where a table used to break words and a log line used to wrap.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

WIDTH = 80


def shipyard(
    *args: str,
    cwd: Path | None = None,
    timeout: float = 120,
    columns: int | None = WIDTH,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``shipyard ARGS`` in a child process, stdout and stderr piped; ``env`` adds variables."""
    env = {**{k: v for k, v in os.environ.items() if k != "COLUMNS"}, **(env or {})}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run(
        [sys.executable, "-m", "shipyard", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def words(text: str) -> set[str]:
    """The words of ``text`` that a reader would notice broken: runs of letters, digits and
    inner hyphens, underscores or dots, two characters or more."""
    return {w for w in re.findall(r"[\w][\w.\-]*[\w]", text)}


def broken(output: str, expected: Iterable[str]) -> list[str]:
    """The expected words that do not appear whole in ``output`` (so were split across lines
    or cut): what a wrapped ``statist / ic`` looks like to a test."""
    return sorted(w for w in set(expected) if w not in output)


def lines_wider_than(output: str, width: int) -> list[str]:
    return [line for line in output.splitlines() if len(line) > width]


def command_tree() -> dict[tuple[str, ...], Any]:
    """Every command and group of the ``shipyard`` app by its path, the root as ``()``.

    A top-level command is resolved as running it would (a lazy app imports its module then).
    """
    import typer
    import typer.main

    from shipyard.cli import app

    root = typer.main.get_command(app)
    ctx = typer.Context(root, info_name="shipyard")
    for name in list(getattr(root, "commands", {})):
        root.resolve_command(ctx, [name])  # type: ignore[attr-defined]
    found: dict[tuple[str, ...], Any] = {}

    def walk(command: Any, path: tuple[str, ...]) -> None:
        found[path] = command
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, (*path, name))

    walk(root, ())
    return found
