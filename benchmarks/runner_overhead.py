"""Runner overhead: Shipyard's local runner against Prefect 3, on DAGs of no-op steps.

Two shapes: a 50-step chain (each step takes the previous one's output) and a 10-wide fan-out
(one source, 10 independent steps, one join). Goal (issue 2): Shipyard's wall time ≤ 0.5×
Prefect's, with every step in its own OS process (Shipyard forks each step from a warm
forkserver, see ``shipyard.pipelines.local``; Prefect runs tasks as threads of the flow's
process, so it pays no process start at all).

Both sides are measured warm: one untimed run first (Shipyard: forkserver preload and database
migration; Prefect: its ephemeral API server), then ``--repeats`` timed runs; the median is
reported. Shipyard's time includes writing the run and step records, each step's output as an
artifact and its lineage, in SQLite; Prefect's includes its own task-run tracking.

Prefect 3 pins clash with ours, so it runs in ``benchmarks/.venvs/prefect`` (created on first
use) as a subprocess: ``runner_overhead.py --job prefect`` is that worker, and this module
imports only the standard library at top level so the peer's virtualenv can run it.

    .venv/bin/python benchmarks/runner_overhead.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venvs" / "prefect"
PEER = ["prefect>=3,<4"]
CHAIN = 50
WIDTH = 10

SHIPYARD_PIPELINES = f"""
from shipyard.pipelines import Pipeline, Resources, step

@step(resources=Resources(cpu="100m"))
def noop(*inputs: int) -> int:
    return 1

chain = Pipeline("bench-chain", kind="data")

@chain
def build_chain():
    x = noop()
    for _ in range({CHAIN} - 1):
        x = noop(x)

fanout = Pipeline("bench-fanout", kind="data")

@fanout
def build_fanout():
    root = noop()
    noop(*[noop(root) for _ in range({WIDTH})])
"""


def shipyard_times(repeats: int) -> dict[str, list[float]]:
    from shipyard.cli.runs import run_services
    from shipyard.pipelines import Runner
    from shipyard.pipelines.loader import load_pipeline
    from shipyard.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "bench.py"
        file.write_text(SHIPYARD_PIPELINES)
        ws = Workspace.open(home=Path(tmp) / "home")
        runner = Runner(ws, **run_services(ws))  # wired as `shipyard run` wires it
        out: dict[str, list[float]] = {}
        for shape in ("chain", "fanout"):
            _, pipeline = load_pipeline(f"{file}:bench-{shape}")
            runner.run(file, pipeline)  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                result = runner.run(file, pipeline)
                times.append(time.perf_counter() - t0)
                assert result.status == "succeeded", result.exit_reason
            out[shape] = times
        runner.close()
        ws.store.dispose()
        return out


def prefect_job(repeats: int) -> dict[str, list[float]]:
    """Runs inside Prefect's virtualenv."""
    from prefect import flow, task

    @task
    def noop(*inputs: int) -> int:
        return 1

    @flow
    def chain() -> int:
        x = noop()
        for _ in range(CHAIN - 1):
            x = noop(x)
        return x

    @flow
    def fanout() -> int:
        root = noop()
        futures = [noop.submit(root) for _ in range(WIDTH)]
        return noop(*[f.result() for f in futures])

    out: dict[str, list[float]] = {}
    for name, fn in (("chain", chain), ("fanout", fanout)):
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = times
    return out


def ensure_peer() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER], check=True)
    return python


def prefect_times(repeats: int) -> tuple[dict[str, list[float]], str]:
    python = ensure_peer()
    with tempfile.TemporaryDirectory() as home:
        env = {
            **os.environ,
            "PREFECT_HOME": home,
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        done = subprocess.run(
            [str(python), __file__, "--job", "prefect", "--repeats", str(repeats)],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        version = subprocess.run(
            [str(python), "-c", "import prefect; print(prefect.__version__)"],
            capture_output=True,
            text=True,
            env=env,
        ).stdout.strip()
    return json.loads(done.stdout.strip().splitlines()[-1]), version


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--job", choices=["prefect"])
    args = parser.parse_args()
    if args.job == "prefect":
        print(json.dumps(prefect_job(args.repeats)))
        return
    ours = shipyard_times(args.repeats)
    theirs, version = prefect_times(args.repeats)
    rows: list[dict[str, Any]] = []
    print(f"runner overhead, median of {args.repeats} warm runs, {os.cpu_count()} CPUs")
    print(f"{'DAG':<24}{'shipyard s':>12}{f'prefect {version} s':>20}{'ratio':>8}{'goal':>8}")
    for shape, label in (("chain", f"{CHAIN}-step chain"), ("fanout", f"{WIDTH}-wide fan-out")):
        a, b = statistics.median(ours[shape]), statistics.median(theirs[shape])
        ratio = a / b
        ok = "ok" if ratio <= 0.5 else "MISSED"
        print(f"{label:<24}{a:>12.3f}{b:>20.3f}{ratio:>8.2f}{'≤0.50 ' + ok:>8}")
        rows.append({"dag": label, "shipyard_s": a, "prefect_s": b, "ratio": ratio})
    print("shipyard: one OS process per step (forkserver); prefect: tasks as threads")


if __name__ == "__main__":
    main()
