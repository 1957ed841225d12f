"""``shipyard serve`` as a real process (the frame lists it in COMMAND_MODULES)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from serving.conftest import fit_classifier, free_port
from shipyard.registry import Registry
from shipyard.workspace import Workspace

LAUNCH = (
    "import typer; from shipyard.cli import serve; app = typer.Typer(); "
    "app.callback()(lambda: None); serve.register(app); app()"
)


def test_serve_command_serves_the_champion_until_terminated(
    workspace: Workspace, tmp_path: Path
) -> None:
    clf, x = fit_classifier()
    Registry.of(workspace).register("iris", clf, training_data=x, alias="champion")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "serve", "--port", str(port), "--model", "iris"],
        cwd=tmp_path,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.post(
                    f"http://127.0.0.1:{port}/invocations",
                    json={"instances": [[0.1, 0.2, 0.3]]},
                    timeout=2,
                )
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "shipyard serve did not start"
                time.sleep(0.2)
        assert r.status_code == 200
        assert r.json() == {"predictions": clf.predict([[0.1, 0.2, 0.3]]).tolist()}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    # Uvicorn re-raises the signal it caught once it has shut down cleanly
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert b"Traceback" not in err
    assert f"serving on http://127.0.0.1:{port}" in out.decode()
