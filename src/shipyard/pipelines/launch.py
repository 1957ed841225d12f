"""Starting a run on this host on someone's behalf: ``shipyard run FILE:PIPELINE`` as a
detached process that acts as that identity, and the wait for its run record.

The runner is the process itself (``python -m shipyard run``), so the run it records carries
its pid (``runs.runner_pid``) and this host: that is how the record is told apart from any
other run of the pipeline started meanwhile. It acts as ``SHIPYARD_USER=<identity>``, so the
run's ``created_by`` is whoever asked for it, which four-eyes reads later (the author of a
model version is who started the run that trained it). It works on the same workspace as the
process that starts it (home, database and artifact store are handed over explicitly, since
they may have come from keyword settings rather than the environment), never through a
control plane (``SHIPYARD_URL`` and ``SHIPYARD_TOKEN`` are dropped).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from shipyard.config import Settings
from shipyard.errors import InvalidInput, PipelineError
from shipyard.store import Store
from shipyard.store.tables import Run

POLL_S = 0.05
_TAIL_BYTES = 4096


@dataclass(frozen=True)
class Launched:
    """A runner process started by :func:`launch_run`: its pid and where its output goes."""

    process: subprocess.Popen[bytes]
    output: Path
    pipeline: str

    @property
    def pid(self) -> int:
        return self.process.pid


def runner_env(settings: Settings, actor: str) -> dict[str, str]:
    """The environment of a runner acting as ``actor`` on ``settings``' workspace."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SHIPYARD_URL", "SHIPYARD_TOKEN", "SHIPYARD_USER")
    }
    env.update(
        SHIPYARD_HOME=str(settings.home.resolve()),
        SHIPYARD_DB_URL=settings.database_url,
        SHIPYARD_ARTIFACT_ROOT=settings.artifact_url,
        SHIPYARD_USER=actor,
    )
    return env


def launch_run(
    settings: Settings,
    file: str,
    pipeline: str,
    params: Mapping[str, str | int | float | bool],
    *,
    actor: str,
    pool: str | None = None,
    priority: int = 0,
) -> Launched:
    """Start ``shipyard run FILE:PIPELINE`` for ``actor``, detached (its own session, so
    nothing this process gets, a Ctrl-C or a hang-up, reaches it); its output goes to a file
    under the workspace's logs."""
    out_dir = settings.logs_dir / "launches"
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{pipeline}-{uuid.uuid4().hex[:12]}.log"
    argv = [sys.executable, "-m", "shipyard", "run", f"{file}:{pipeline}", "--json"]
    for name, value in params.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        argv += ["--param", f"{name}={text}"]
    if pool is not None:
        argv += ["--pool", pool]
    if priority:
        argv += ["--priority", str(priority)]
    with output.open("ab") as sink:
        process = subprocess.Popen(
            argv,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=runner_env(settings, actor),
            start_new_session=True,
        )
    return Launched(process, output, pipeline)


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - _TAIL_BYTES))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def await_run(store: Store, launched: Launched, deadline_s: float) -> str:
    """The id of the run ``launched`` recorded, once it is there.

    :class:`InvalidInput` with the runner's own last line when it ended without recording a
    run (a parameter it refused, a file that is gone); :class:`PipelineError` when no run was
    recorded within ``deadline_s`` (the runner is left running: it may only be slow). Either
    way the process is reaped when it ends, so the caller leaves no zombie behind."""
    proc = launched.process
    host = socket.gethostname()
    query = (
        select(Run.id)
        .where(Run.runner_pid == proc.pid, Run.runner_host == host)
        .where(Run.pipeline == launched.pipeline)
        .order_by(Run.created_at.desc())
        .limit(1)
    )
    deadline = time.monotonic() + deadline_s
    try:
        while True:
            ended = proc.poll()  # before the read: a run recorded just before the exit is seen
            with store.session() as s:
                run_id = s.scalar(query)
            if run_id is not None:
                return run_id
            if ended is not None:
                why = _tail(launched.output) or f"exit status {ended}"
                raise InvalidInput(
                    f"pipeline {launched.pipeline} did not start: {why.removeprefix('error: ')}"
                )
            if time.monotonic() > deadline:
                raise PipelineError(
                    f"the runner of {launched.pipeline} (pid {proc.pid}) recorded no run within "
                    f"{deadline_s:g}s; it is left running, its output is in {launched.output}"
                )
            time.sleep(POLL_S)
    finally:
        if proc.poll() is None:
            threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
