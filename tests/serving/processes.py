"""The ``shipyard`` command as a real process, for the tests of what a server process does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

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


def kill_and_await_helper(
    proc: subprocess.Popen[bytes], helper: str, own_child: bool = False
) -> None:
    """SIGKILL ``proc`` (a worker that printed its helper process's pid as its first line) and
    wait, with a deadline, until that helper has died too: a helper must not outlive its
    worker. ``own_child``: also check that the helper is ``proc``'s own child."""
    try:
        assert proc.stdout is not None
        child = psutil.Process(int(proc.stdout.readline()))
        assert child.is_running()
        if own_child:
            assert child.ppid() == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    deadline = time.monotonic() + 15
    while child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, f"the {helper} helper outlived its worker"
        time.sleep(0.05)
