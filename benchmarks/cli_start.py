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
starts (the row measures listing, not creating a database), and a second workspace holding
runs of every status, a page of ten and its ``older:`` cursor line. ``--src NAME=PATH`` runs the
``shipyard`` rows once per source tree (``PYTHONPATH``), e.g. before and after a change.

Every row reads cached bytecode, as an installed package does (pip compiles it): the processes
get a temporary ``PYTHONPYCACHEPREFIX``, warmed by one untimed run of each row, whatever
``PYTHONDONTWRITEBYTECODE`` says. Without it a source checkout run with that variable set (as
on the project's machines) compiled every Shipyard module on every start, about 0.15 s of
``runs list``, while Typer's row read the bytecode pip wrote: ``--no-bytecode-cache`` measures
that way.

``--breakdown`` then says where ``runs list``'s time goes: the same steps in one process, one
after the other (each library first on its own, then what Shipyard adds), median CPU time per
step, and which of SQLAlchemy, Alembic and Pydantic the command loaded.

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


# What `shipyard runs list` does, step by step, in the order it does it; each step's CPU time is
# what it adds to the steps before it (a library imported by an earlier step costs nothing).
# The command's own work is one step (a source tree from before the direct read takes the
# operation's way through SQLAlchemy in it); the libraries it loaded are named after the table.
BREAKDOWN = r"""
import json, os, sys, time
marks = []
last = time.process_time()
def mark(step):
    global last
    now = time.process_time()
    marks.append((step, now - last))
    last = now
import typer; mark("typer (the bare import)")
import shipyard.cli; mark("shipyard.cli: the command table")
import rich.console; mark("rich.console")
import rich.table; mark("rich.table")
import shipyard.cli.runs; mark("shipyard.cli.runs and what it imports")
from shipyard.cli import LazyGroup, app
group = typer.main.get_group(app)
ctx = group.make_context("shipyard", ["runs", "list"])
_, command, args = group.resolve_command(ctx, ["runs", "list"])
sub = command.make_context("runs", args, parent=ctx)
_, leaf, leaf_args = command.resolve_command(sub, ["list"])
leaf.make_context("list", [], parent=sub); mark("typer: build and parse the command")
import sqlite3; mark("sqlite3 (the driver)")
shipyard.cli.runs.runs_list(
    pipeline=None, status=None, kind=None, since=None, limit=20, cursor=None, as_json=False
)
mark("runs list: settings, database, a page of runs, the table printed")
heavy = ("sqlalchemy", "alembic", "pydantic", "pydantic_settings", "shipyard.api.operations")
print(json.dumps([marks, [m for m in heavy if m in sys.modules]]), file=sys.stderr, flush=True)
if hasattr(shipyard.cli, "end_process"):  # as the tree's main() ends the process, if it does
    import atexit; atexit.register(shipyard.cli.end_process)
"""

FILL = r"""
import sys
from shipyard.workspace import Workspace
from shipyard.store.tables import PipelineRecord, Run
ws = Workspace.open()
statuses = ("succeeded", "failed", "running", "cancelled")
with ws.store.session() as s:
    s.add(PipelineRecord(name="etl", kind="data", file="etl.py", spec={}, updated_at=0.0))
    for i in range(int(sys.argv[1])):
        t = 1.7e9 + 60 * i
        s.add(Run(
            id=f"{i:012x}", pipeline="etl", kind="data", file="etl.py", status=statuses[i % 4],
            params={"rows": 1000 * i}, created_at=t, started_at=t + 1,
            ended_at=None if i % 4 == 2 else t + 30 + i,
            exit_reason="step load failed: exit code 1" if i % 4 == 1 else None,
        ))
ws.store.dispose()
"""
"""Writes ``argv[1]`` runs of every status into the workspace of ``SHIPYARD_HOME``."""
RUNS = 12
"""Runs in the workspace of the ``runs list (N runs)`` row: a page with an ``older:`` line."""


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
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="keep the environment's bytecode setting (PYTHONDONTWRITEBYTECODE) as it is",
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="also time runs list's steps in one process"
    )
    args = parser.parse_args()
    trees = dict(s.split("=", 1) for s in args.src) or {"": str(HERE.parent / "src")}
    work = Path(tempfile.mkdtemp(prefix="shipyard-cli-start-"))
    base = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    base.update(SHIPYARD_HOME=str(work / "home"), COLUMNS="100")
    if not args.no_bytecode_cache:
        base.pop("PYTHONDONTWRITEBYTECODE", None)
        base["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    rows: dict[str, tuple[list[str], dict[str, str]]] = {
        'python -c "import typer"': ([sys.executable, "-c", "import typer"], base),
    }
    for tree, path in trees.items():
        env = {**base, "PYTHONPATH": str(Path(path).resolve())}
        run_once([sys.executable, "-m", "shipyard", "init"], env, work)  # the empty workspace
        filled = {**env, "SHIPYARD_HOME": str(work / "home-runs")}
        if not (work / "home-runs").is_dir():
            run_once([sys.executable, "-c", FILL, str(RUNS)], filled, work)
        for label, cmd in COMMANDS.items():
            name = f"{label} [{tree}]" if tree else label
            rows[name] = ([sys.executable, "-m", "shipyard", *cmd], env)
            if cmd == ["runs", "list"]:
                name = f"{label} --limit 10 ({RUNS} runs)" + (f" [{tree}]" if tree else "")
                rows[name] = ([sys.executable, "-m", "shipyard", *cmd, "--limit", "10"], filled)
    if not args.no_bytecode_cache:
        for argv, env in rows.values():
            run_once(argv, env, work)  # writes the bytecode the timed runs read
    walls: dict[str, list[float]] = {name: [] for name in rows}
    cpus: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.runs):
        for name, (argv, env) in rows.items():
            wall, cpu = run_once(argv, env, work)
            walls[name].append(wall)
            cpus[name].append(cpu)
    typer_wall = statistics.median(walls['python -c "import typer"'])
    typer_cpu = statistics.median(cpus['python -c "import typer"'])
    if args.breakdown:
        breakdown(trees, base, work, args.runs)
    cache = "as the environment says" if args.no_bytecode_cache else "cached"
    print(
        f"median of {args.runs} whole processes each, interleaved; {os.cpu_count()} CPUs; "
        f"bytecode {cache}; load average {os.getloadavg()[0]:.2f}"
    )
    width = max(map(len, rows))
    print(f"{'process':{width}} {'wall':>8} {'×typer':>7} {'CPU':>8} {'×typer':>7}  goal ≤ 3×")
    for name in rows:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        verdict = "" if name.startswith("python") else ("met" if wall / typer_wall <= 3 else "no")
        print(
            f"{name:{width}} {wall:7.3f}s {wall / typer_wall:6.1f}× {cpu:7.3f}s "
            f"{cpu / typer_cpu:6.1f}×  {verdict}"
        )


def breakdown(trees: dict[str, str], base: dict[str, str], work: Path, runs: int) -> None:
    """Print, for each source tree, the median time of each step of ``runs list``."""
    import json

    for tree, path in trees.items():
        env = {**base, "PYTHONPATH": str(Path(path).resolve())}
        argv = [sys.executable, "-c", BREAKDOWN]
        steps: dict[str, list[float]] = {}
        rest = "the interpreter: starting, and ending (the process's CPU less the steps)"
        for i in range(runs + 1):
            proc = subprocess.Popen(
                argv, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            err = proc.stderr.read().decode() if proc.stderr else ""
            _, status, usage = os.wait4(proc.pid, 0)
            if proc.stderr:
                proc.stderr.close()
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"the breakdown failed: {err[-800:]}")
            if i == 0:
                continue  # writes the bytecode
            marks, loaded = json.loads(err.strip().splitlines()[-1])
            for step, seconds in marks:
                steps.setdefault(step, []).append(seconds)
            cpu = usage.ru_utime + usage.ru_stime
            steps.setdefault(rest, []).append(cpu - sum(s for _, s in marks))
        total = sum(statistics.median(v) for v in steps.values())
        print(f"runs list, step by step [{tree or 'src'}] (median of {runs}, CPU ms):")
        for step, values in steps.items():
            print(f"  {statistics.median(values) * 1000:7.1f}  {step}")
        print(f"  {total * 1000:7.1f}  in all")
        print(f"  loaded: {', '.join(loaded) or 'none of SQLAlchemy, Alembic, Pydantic'}")


if __name__ == "__main__":
    main()
