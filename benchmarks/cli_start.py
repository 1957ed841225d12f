"""Cold start of the ``shipyard`` command: whole processes next to a bare ``import typer``.

Run from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/cli_start.py                 # 9 runs of each row
    .venv/bin/python benchmarks/cli_start.py --runs 5
    .venv/bin/python benchmarks/cli_start.py --src before=../main/src --src after=src

Every row is a fresh ``python`` process, timed from spawn to exit, with its CPU time (user +
system, from ``wait4``; on a shared machine the wall time also counts waiting for a core). The
rows run interleaved, round after round, so a change in the machine's load touches them all
alike; the table shows medians and each row's ratio to ``python -c "import typer"``. ``runs
list`` lists an empty workspace in a temporary ``SHIPYARD_HOME`` created before the clock
starts (the row measures listing, not creating a database). ``--src NAME=PATH`` runs the
``shipyard`` rows once per source tree (``PYTHONPATH``), e.g. before and after a change.

Goal (issue 12): every ``shipyard`` row ≤ 3× the bare Typer import.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOAL_RATIO = 3.0
COMMANDS = {
    "shipyard --help": ["--help"],
    "shipyard runs list": ["runs", "list"],
    "shipyard drift --help": ["drift", "--help"],
}


def run_once(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one whole process; fails loudly if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {err[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="processes per row (median)")
    parser.add_argument(
        "--src",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a source tree to put on PYTHONPATH (repeatable); default: this checkout's src",
    )
    args = parser.parse_args()
    trees = dict(s.split("=", 1) for s in args.src) or {"": str(HERE.parent / "src")}
    work = Path(tempfile.mkdtemp(prefix="shipyard-cli-start-"))
    base = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    base.update(SHIPYARD_HOME=str(work / "home"), COLUMNS="100")
    rows: dict[str, tuple[list[str], dict[str, str]]] = {
        'python -c "import typer"': ([sys.executable, "-c", "import typer"], base),
    }
    for tree, path in trees.items():
        env = {**base, "PYTHONPATH": str(Path(path).resolve())}
        run_once([sys.executable, "-m", "shipyard", "init"], env, work)  # the empty workspace
        for label, cmd in COMMANDS.items():
            name = f"{label} [{tree}]" if tree else label
            rows[name] = ([sys.executable, "-m", "shipyard", *cmd], env)
    walls: dict[str, list[float]] = {name: [] for name in rows}
    cpus: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.runs):
        for name, (argv, env) in rows.items():
            wall, cpu = run_once(argv, env, work)
            walls[name].append(wall)
            cpus[name].append(cpu)
    typer_wall = statistics.median(walls['python -c "import typer"'])
    typer_cpu = statistics.median(cpus['python -c "import typer"'])
    print(f"median of {args.runs} whole processes each, interleaved; {os.cpu_count()} CPUs")
    print(f"{'process':42} {'wall':>8} {'×typer':>7} {'CPU':>8} {'×typer':>7}  goal ≤ 3×")
    for name in rows:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        verdict = "" if name.startswith("python") else ("met" if wall / typer_wall <= 3 else "no")
        print(
            f"{name:42} {wall:7.3f}s {wall / typer_wall:6.1f}× {cpu:7.3f}s "
            f"{cpu / typer_cpu:6.1f}×  {verdict}"
        )


if __name__ == "__main__":
    main()
