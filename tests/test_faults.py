"""The fault script (``benchmarks/faults.py``) in two short rounds: a server, a daemon, runners
and steps SIGKILLed at random points leave nothing serving or running, no run running without
its runner, no lease past its TTL, no capacity over-granted and no alert lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "faults.py"


@pytest.mark.slow
def test_two_rounds_of_random_kills_leave_everything_reconciled() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--rounds", "2", "--seed", "3"],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "capacity never over-granted: True" in out.stdout
    assert "every alert delivered" in out.stdout
