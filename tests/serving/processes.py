"""The ``shipyard`` command as a real process, for the tests of what a server process does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

START_S = 120.0
"""How long a server process may take to answer first: imports and model loading on a machine
that other test runs keep busy (a deadline, not a wait)."""


def shipyard_serve(tmp_path: Path, *args: str, session: bool = False) -> subprocess.Popen[bytes]:
    """``shipyard serve ARGS`` started in ``tmp_path`` with the test's environment (its errors
    become the command's one line); ``session``: in a process group of its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "shipyard", "serve", *args],
        cwd=tmp_path,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=session,
    )


# The commands cli/serve.py registers, as a command of their own (the way the shipyard command
# loads them; that its table lists them is tests/test_cli_lazy.py's concern)
SERVE_COMMANDS = (
    "import typer; from shipyard.cli import serve; app = typer.Typer(); "
    "app.callback()(lambda: None); serve.register(app); app()"
)


def serve_commands(tmp_path: Path, *args: str) -> str:
    """The output of one of cli/serve.py's commands (``serving instances``…) that must
    succeed."""
    done = subprocess.run(
        [sys.executable, "-c", SERVE_COMMANDS, *args],
        cwd=tmp_path,
        env=dict(os.environ),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()
