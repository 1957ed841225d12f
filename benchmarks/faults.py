"""Faults at random points, many rounds: kill the model server, the daemon, a runner and a step,
then check that Shipyard cleaned up after each of them (issue #20).

Each round, on one workspace (SQLite), with short leases and a fast daemon:

1. a daemon runs (restarted whenever it was killed: the control loop is what reconciles);
2. a model server runs on a quota lease (``serve --workers 2 --pool serving``);
3. two runners run a pipeline whose steps hold 1 CPU each of a 2-CPU pool;
4. an alert condition is written (``fault_probe{round=N}``), whose rule sends to a log receiver;
5. after a random delay, a random non-empty subset of {server, daemon, runner, step} is killed
   with SIGKILL at a random point of its work.

Throughout, the pool's held leases are sampled (never more than its capacity). After the last
round, within a deadline, it checks:

- nothing is left serving: no port of a killed server answers, no worker of it runs;
- nothing is left running: no step process of a dead runner runs;
- no run is ``running`` without a live runner (so no schedule is blocked by one);
- no lease is held by a dead process past its TTL;
- no capacity was over-granted at any sample;
- no alert was lost: every round's condition reached the receiver.

    python benchmarks/faults.py --rounds 10 --seed 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

LEASE_TTL_S = 6.0
DEADLINE_S = 90.0
POOL_CPU = 2.0
MARKER = "SHIPYARD_FAULT_SCRIPT"

PIPELINE = '''
"""A pipeline whose two steps each hold 1 CPU for a while (the fault script's runs)."""
import time

from shipyard.pipelines import Pipeline, Resources, step


@step(resources=Resources(cpu=1, memory="128Mi"))
def hold(seconds: float) -> float:
    end = time.time() + seconds
    while time.time() < end:
        time.sleep(0.05)
    return seconds


@step(resources=Resources(cpu=1, memory="128Mi"))
def after(x: float) -> float:
    return x


@Pipeline("faults")
def build(seconds: float = 8.0):
    return after(hold(seconds))
'''

POOLS = """
pools:
  - name: faults
    mode: shared
    capacity: {cpu: 2, memory: 2Gi}
    members:
      - {pipeline: faults, share: 1.0, cap: 1.0}
  - name: serving
    mode: shared
    capacity: {cpu: 2, memory: 2Gi}
    default_cap_fraction: 1.0
"""

ALERTING = """
route:
  receiver: faults-log
  group_by: [alertname, round]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - {name: faults-log, type: log, path: faults-alerts.log}
rules:
  - name: FaultProbe
    kind: threshold
    metric: fault_probe
    op: ">"
    threshold: 0
    lookback: 1h
    severity: ticket
"""


@dataclass
class World:
    home: Path
    env: dict[str, str]
    daemon: subprocess.Popen[bytes] | None = None
    server: subprocess.Popen[bytes] | None = None
    server_port: int = 0
    runners: list[subprocess.Popen[bytes]] = field(default_factory=list)
    dead_ports: list[int] = field(default_factory=list)
    dead_pids: list[int] = field(default_factory=list)
    over_granted: list[float] = field(default_factory=list)
    kills: dict[str, int] = field(default_factory=dict)

    def shipyard(self, *args: str, background: bool = False) -> subprocess.Popen[bytes]:
        log = open(self.home / "logs" / f"{args[0]}-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
        return subprocess.Popen(
            [sys.executable, "-m", "shipyard", *args],
            env=self.env,
            cwd=self.home,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def check(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "shipyard", *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise SystemExit(f"shipyard {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def until(condition: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > deadline_s:
            raise AssertionError(f"not within {deadline_s:.0f}s: {what}")
        time.sleep(0.2)
    return time.monotonic() - start


def answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


def ours() -> list[psutil.Process]:
    """Every live process started for this script (they inherit MARKER)."""
    found = []
    for p in psutil.process_iter(["pid", "status"]):
        with contextlib.suppress(psutil.Error):
            if p.info["status"] == psutil.STATUS_ZOMBIE or p.pid == os.getpid():
                continue
            if p.environ().get(MARKER) == str(os.getpid()):
                found.append(p)
    return found


def store(world: World):  # type: ignore[no-untyped-def]
    from shipyard.workspace import Workspace

    return Workspace.open(home=world.home).store


def held_cpu(world: World) -> float:
    from sqlalchemy import select

    from shipyard.store.quota import QuotaLease

    st = store(world)
    try:
        with st.session() as s:
            rows = s.scalars(
                select(QuotaLease).where(QuotaLease.pool == "faults", QuotaLease.status == "held")
            ).all()
            return sum(float(r.resources.get("cpu", 0)) for r in rows)
    finally:
        st.dispose()


def write_probe(world: World, round_no: int) -> None:
    from shipyard.store.tables import MetricPoint

    st = store(world)
    try:
        with st.session() as s:
            s.add(MetricPoint.of("fault_probe", {"round": str(round_no)}, time.time(), 1.0))
    finally:
        st.dispose()


def start_daemon(world: World) -> None:
    if world.daemon is None or world.daemon.poll() is not None:
        world.daemon = world.shipyard(
            "daemon", "--config", str(world.home / "alerting.yaml"), "--tick", "0.2"
        )


def start_server(world: World) -> None:
    world.server_port = free_port()
    world.server = world.shipyard(
        "serve", "--port", str(world.server_port), "--workers", "2", "--pool", "serving",
        "--cpu", "0.5", "--memory", "256Mi",
    )  # fmt: skip
    until(lambda: answers(world.server_port), "the model server answers", 120)


def kill(world: World, what: str, rng: random.Random) -> bool:
    """SIGKILL one part; False when there was nothing of that kind to kill."""
    victim: psutil.Process | subprocess.Popen[bytes] | None = None
    if what == "server" and world.server is not None and world.server.poll() is None:
        victim = world.server
        world.dead_ports.append(world.server_port)
        world.server = None
    elif what == "daemon" and world.daemon is not None and world.daemon.poll() is None:
        victim = world.daemon
        world.daemon = None
    elif what == "runner":
        alive = [r for r in world.runners if r.poll() is None]
        if alive:
            victim = rng.choice(alive)
    elif what == "step":
        # steps are forked by the runner's forkserver: the children of that process
        steps = [
            step
            for r in world.runners
            if r.poll() is None
            for server in _children(r.pid)
            if "forkserver" in " ".join(_cmdline(server))
            for step in _children(server.pid)
        ]
        if steps:
            victim = rng.choice(steps)
    if victim is None:
        return False
    world.dead_pids.append(victim.pid)
    with contextlib.suppress(ProcessLookupError, psutil.Error):
        victim.send_signal(signal.SIGKILL) if isinstance(victim, psutil.Process) else victim.kill()
    world.kills[what] = world.kills.get(what, 0) + 1
    return True


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def sample_capacity(world: World, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        held = held_cpu(world)
        if held > POOL_CPU + 1e-9:
            world.over_granted.append(held)
        time.sleep(0.25)


def run_round(world: World, round_no: int, rng: random.Random) -> None:
    start_daemon(world)
    if world.server is None:
        start_server(world)
    world.runners = [
        world.shipyard("run", "pipeline.py", "--pool", "faults", "--param", "seconds=6")
        for _ in range(2)
    ]
    write_probe(world, round_no)
    sample_capacity(world, rng.uniform(1.0, 5.0))
    parts = ["server", "daemon", "runner", "step"]
    chosen = [p for p in parts if rng.random() < 0.5] or [rng.choice(parts)]
    for part in chosen:
        kill(world, part, rng)
        sample_capacity(world, rng.uniform(0.0, 1.0))
    start_daemon(world)  # the control loop is what reconciles: it must come back
    for r in world.runners:  # survivors finish their runs
        with contextlib.suppress(subprocess.TimeoutExpired):
            r.wait(timeout=60)
    sample_capacity(world, 0.5)


def invariants(world: World, rounds: int) -> dict[str, float]:
    """The checks of the module doc; each waits for its condition within the deadline."""
    from sqlalchemy import select

    from shipyard.pipelines.reconcile import same_process
    from shipyard.store.quota import QuotaLease
    from shipyard.store.tables import Run

    waited: dict[str, float] = {}
    waited["no killed server answers"] = until(
        lambda: not any(answers(p) for p in world.dead_ports), "a killed server still answers"
    )

    def runs_without_runner() -> list[str]:
        st = store(world)
        try:
            with st.session() as s:
                running = s.scalars(select(Run).where(Run.status == "running")).all()
                return [
                    r.id for r in running if not same_process(r.runner_pid, r.runner_started_at)
                ]
        finally:
            st.dispose()

    waited["no run running without its runner"] = until(
        lambda: not runs_without_runner(), "runs left running without a runner"
    )

    def stale_leases() -> list[str]:
        st = store(world)
        now = time.time()
        try:
            with st.session() as s:
                held = s.scalars(select(QuotaLease).where(QuotaLease.status == "held")).all()
                return [
                    lease.id
                    for lease in held
                    if lease.expires_at is not None and lease.expires_at < now - LEASE_TTL_S
                ]
        finally:
            st.dispose()

    waited["no lease held past its TTL"] = until(
        lambda: not stale_leases(), "leases held past their TTL"
    )

    def delivered() -> set[str]:
        log = world.home / "logs" / "faults-alerts.log"
        if not log.exists():
            return set()
        rounds_seen = set()
        for line in log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                for alert in json.loads(line).get("alerts", []):
                    rounds_seen.add(alert.get("labels", {}).get("round"))
        return rounds_seen

    expected = {str(n) for n in range(rounds)}
    waited["every alert delivered"] = until(
        lambda: expected <= delivered(), f"alerts lost: {sorted(expected - delivered())}"
    )
    if world.over_granted:
        raise AssertionError(f"capacity over-granted: {max(world.over_granted)} > {POOL_CPU}")

    def leftover() -> list[psutil.Process]:
        keep = {p.pid for p in (world.daemon, world.server) if p is not None}
        return [
            p for p in ours() if p.pid not in keep and not (keep & {q.pid for q in p.parents()})
        ]

    waited["nothing of a killed part still runs"] = until(
        lambda: not leftover(), "processes left running"
    )
    return waited


def run_outcomes(world: World) -> dict[str, int]:
    """How the rounds' runs ended: status, and the reason of those that did not succeed."""
    from sqlalchemy import select

    from shipyard.store.tables import Run

    st = store(world)
    try:
        with st.session(readonly=True) as s:
            outcomes: dict[str, int] = {}
            for status, reason in s.execute(select(Run.status, Run.exit_reason)):
                key = status if status == "succeeded" else f"{status}: {(reason or '?')[:11]}…"
                outcomes[key] = outcomes.get(key, 0) + 1
            return outcomes
    finally:
        st.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="Keep the workspace and its logs.")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    folder = (
        contextlib.nullcontext(tempfile.mkdtemp(prefix="shipyard-faults-"))
        if args.keep
        else tempfile.TemporaryDirectory(prefix="shipyard-faults-")
    )
    with folder as tmp:
        home = Path(tmp)
        (home / "logs").mkdir()
        (home / "pipeline.py").write_text(textwrap.dedent(PIPELINE))
        (home / "pools.yaml").write_text(POOLS)
        (home / "alerting.yaml").write_text(ALERTING)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")} | {
            "SHIPYARD_HOME": str(home),
            "SHIPYARD_QUOTA__LEASE_TTL_S": str(LEASE_TTL_S),
            "SHIPYARD_DAEMON__LEADER_TTL_S": "3",
            MARKER: str(os.getpid()),
        }
        os.environ["SHIPYARD_HOME"] = str(home)
        world = World(home, env)
        world.check("init")
        world.check("quota", "apply", "pools.yaml")
        started = time.monotonic()
        try:
            for n in range(args.rounds):
                run_round(world, n, rng)
                print(f"round {n + 1}/{args.rounds}: killed so far {world.kills}", flush=True)
            waited = invariants(world, args.rounds)
        finally:
            for p in (world.server, world.daemon, *world.runners):
                if p is not None and p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        p.wait(timeout=20)
            for p in ours():
                with contextlib.suppress(psutil.Error):
                    p.kill()
        print(f"\n{args.rounds} rounds in {time.monotonic() - started:.0f}s, kills: {world.kills}")
        print(f"{'invariant':<40} {'held after (s)':>15}")
        for name, seconds in waited.items():
            print(f"{name:<40} {seconds:>15.1f}")
        print("capacity never over-granted:", not world.over_granted)
        print(f"runs: {run_outcomes(world)}")
        if args.keep:
            print(f"workspace kept in {home}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
