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

Every row reads cached bytecode, as an installed package does (pip compiles it): the processes
get a temporary ``PYTHONPYCACHEPREFIX``, warmed by one untimed run of each row, whatever
``PYTHONDONTWRITEBYTECODE`` says. Without it a source checkout run with that variable set (as
on the project's machines) compiled every Shipyard module on every start, about 0.15 s of
``runs list``, while Typer's row read the bytecode pip wrote: ``--no-bytecode-cache`` measures
that way.

``--breakdown`` then says where ``runs list``'s time goes: the same steps in one process, one
after the other (each library first on its own, then what Shipyard adds), median CPU time per
step.

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
BREAKDOWN = r"""
import gc, json, os, sys, time
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
import shipyard.cli.runs; mark("shipyard.cli.runs, cli.output")
from shipyard.cli import LazyGroup, app
group = typer.main.get_group(app)
ctx = group.make_context("shipyard", ["runs", "list"])
_, command, args = group.resolve_command(ctx, ["runs", "list"])
sub = command.make_context("runs", args, parent=ctx)
_, leaf, leaf_args = command.resolve_command(sub, ["list"])
leaf.make_context("list", [], parent=sub); mark("typer: build and parse the command")
import sqlalchemy; mark("sqlalchemy (Core)")
import sqlalchemy.orm; mark("sqlalchemy.orm")
import shipyard.store.tables; mark("shipyard.store.tables (every table, declared)")
import pydantic; from pydantic import BaseModel; mark("pydantic")
from pydantic.plugin._loader import get_plugins; get_plugins()
mark("pydantic: look for plugins (importlib.metadata)")
import pydantic_settings; mark("pydantic_settings")
import shipyard.workspace; mark("shipyard.config, workspace, store.db")
import shipyard.api.client, shipyard.identity; mark("shipyard.api.client, operations, identity")
from shipyard.workspace import Workspace
ws = Workspace.open(create=False); mark("open the workspace: settings, engine, schema check")
import shipyard.api.ops.runs, shipyard.pipelines.listing; mark("ops.runs, pipelines.listing")
from shipyard.api.client import LocalClient
from shipyard.identity import Principal
found = LocalClient(ws, Principal.embedded("me")).call("runs.list", limit=20)
mark("runs.list: first query (the ORM configures its mappers)")
from shipyard.cli.output import console
console.print("no runs yet"); mark("print")
print(json.dumps(marks), file=sys.stderr, flush=True)
if hasattr(shipyard.cli, "end_process"):  # as the tree's main() ends the process, if it does
    import atexit; atexit.register(shipyard.cli.end_process)
"""


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
        for label, cmd in COMMANDS.items():
            name = f"{label} [{tree}]" if tree else label
            rows[name] = ([sys.executable, "-m", "shipyard", *cmd], env)
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
    print(f"{'process':42} {'wall':>8} {'×typer':>7} {'CPU':>8} {'×typer':>7}  goal ≤ 3×")
    for name in rows:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        verdict = "" if name.startswith("python") else ("met" if wall / typer_wall <= 3 else "no")
        print(
            f"{name:42} {wall:7.3f}s {wall / typer_wall:6.1f}× {cpu:7.3f}s "
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
            marks = json.loads(err.strip().splitlines()[-1])
            for step, seconds in marks:
                steps.setdefault(step, []).append(seconds)
            cpu = usage.ru_utime + usage.ru_stime
            steps.setdefault(rest, []).append(cpu - sum(s for _, s in marks))
        total = sum(statistics.median(v) for v in steps.values())
        print(f"runs list, step by step [{tree or 'src'}] (median of {runs}, CPU ms):")
        for step, values in steps.items():
            print(f"  {statistics.median(values) * 1000:7.1f}  {step}")
        print(f"  {total * 1000:7.1f}  in all")


if __name__ == "__main__":
    main()
