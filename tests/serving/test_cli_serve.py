"""``shipyard serve`` as a real process (the frame lists it in COMMAND_MODULES)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from serving.conftest import first_answer, fit_classifier, free_port
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
        r = first_answer(proc, port)
        assert r.status_code == 200
        assert r.json() == {"predictions": clf.predict([[0.1, 0.2, 0.3]]).tolist()}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    # Uvicorn re-raises the signal it caught once it has shut down cleanly
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert b"Traceback" not in err
    assert f"serving on http://127.0.0.1:{port}" in out.decode()
