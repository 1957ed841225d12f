"""What shadowing costs users: p99 latency with 100 % of requests shadowed, against no shadow.

Model servers on one workspace, started alike (``shipyard.serving.server.run``, monitoring on):
one serves model ``shadowed`` (v1 stable, v2 its shadow at 100 %: every answered request is
copied to v2, which answers it in the worker's shadow helper process at idle CPU priority and
writes the pair to the shadow log), the others model ``plain`` (the same v1, no shadow); the
second plain server is a control, A/A: what it differs from the first by is the machine's noise,
and the shadowed server is compared with the mean of the two.
The same closed-loop load (one process per client, a keep-alive ``http.client`` connection each,
one-row ``dataframe_split`` requests, the next sent as soon as the answer arrived) from 1 and 4
clients, rounds interleaving the servers so that load from elsewhere on the machine hits them
alike; each figure is the median over the rounds. The shadow server's ``/metrics`` says how many
copies its shadow answered and how many were dropped (the channel full: the helper, at idle
priority, gets no CPU while the requests want it all), so a low cost cannot hide a shadow that did
no work; the CPU seconds of each server's worker and of the helper say where the time went, and
the worker's context switches and the time its threads waited for a CPU (``schedstat``) per
request, with the helper's wake-ups and preemptions a second, say whether the helper is in the
worker's way below the CPU seconds.

Goal (issue 15): shadowing at 100 % of traffic costs users ≤ 5 % in p99 latency at 1 and 4
clients.

    .venv/bin/python benchmarks/shadow.py [--seconds 4] [--rounds 5] [--clients 1 4]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from serving import free_port, load, stop, wait_ready  # benchmarks/, sys.path[0]

SETUP = """
import time
import numpy as np, pandas as pd
from sklearn.linear_model import LogisticRegression
from shipyard.registry import Registry
from shipyard.serving.split import set_split
from shipyard.workspace import Workspace
rng = np.random.default_rng(0)
x = pd.DataFrame(rng.normal(size=(1000, 4)), columns=["f0", "f1", "f2", "f3"])
y = (x["f0"] + x["f1"] > 0).astype(int)
stable = LogisticRegression().fit(x.to_numpy(), y)
candidate = LogisticRegression(C=0.5).fit(x.to_numpy(), y)
ws = Workspace.open()
registry = Registry.of(ws)
registry.register("plain", stable, training_data=x, alias="champion")
registry.register("shadowed", stable, training_data=x, alias="champion")
registry.register("shadowed", candidate, training_data=x)
with ws.store.session(immediate=True) as s:
    set_split(s, "shadowed", stable=1, shadow=2, shadow_pct=100.0, now=time.time())
"""
GOAL_PCT = 5.0


def shadow_copies(port: int) -> dict[str, float]:
    """The shadow server's copies by outcome, from its ``/metrics``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    got: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("shipyard_http_shadow_copies_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            got[outcome] = got.get(outcome, 0.0) + float(line.rsplit(" ", 1)[1])
    return got


def usage(proc: subprocess.Popen[bytes]) -> dict[str, float]:
    """CPU seconds and context switches (voluntary: it waited, involuntary: it was preempted)
    of a server (the process and its Uvicorn workers) and of its shadow helpers (the
    ``multiprocessing`` children started by ``spawn``)."""
    names = ("cpu", "vol", "invol", "wait")
    got = {f"{who}_{name}": 0.0 for who in ("server", "helper") for name in names}
    root = psutil.Process(proc.pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            times, switches = p.cpu_times(), p.num_ctx_switches()
            who = "helper" if any("multiprocessing" in part for part in p.cmdline()) else "server"
        except psutil.NoSuchProcess:
            continue
        got[f"{who}_cpu"] += times.user + times.system
        got[f"{who}_vol"] += switches.voluntary
        got[f"{who}_invol"] += switches.involuntary
        got[f"{who}_wait"] += run_queue_wait_s(p.pid)
    return got


def run_queue_wait_s(pid: int) -> float:
    """Seconds the threads of a process spent runnable but waiting for a CPU (the second field
    of each ``/proc/PID/task/TID/schedstat``); 0 where the kernel does not say."""
    waited = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                waited += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
    return waited / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    args = parser.parse_args()

    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    work = Path(tempfile.mkdtemp(prefix="shipyard-bench-shadow-"))
    env = {**os.environ, "SHIPYARD_HOME": str(work / "home")}
    env = {k: v for k, v in env.items() if not k.startswith("SHIPYARD_") or k == "SHIPYARD_HOME"}
    subprocess.run([sys.executable, "-c", SETUP], check=True, env=env, cwd=work)
    servers = {"shadow 100 %": "shadowed", "no shadow": "plain", "no shadow A/A": "plain"}
    procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    used: dict[str, dict[str, float]] = {}
    try:
        for name, model in servers.items():
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-c", "from shipyard.serving.server import run; "
                 f"run('127.0.0.1', {port}, 1, default_model='{model}')"],
                env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
            procs[name] = (proc, port)
            wait_ready(port, "/ping")
        before = {name: usage(proc) for name, (proc, _) in procs.items()}
        began = time.monotonic()
        for round_no in range(args.rounds):
            for clients in args.clients:
                order = list(procs.items())
                if round_no % 2:
                    order.reverse()  # neither server always runs first
                for name, (_, port) in order:
                    path = f"/models/{servers[name]}/invocations"
                    runs.setdefault((name, clients), []).append(
                        load(port, path, clients, args.seconds)
                    )
            print(f"  round {round_no + 1}/{args.rounds} done", flush=True)
        time.sleep(2.0)  # let the helper answer what waits and report it
        copies = shadow_copies(procs["shadow 100 %"][1])
        elapsed_s = time.monotonic() - began
        for name, (proc, _) in procs.items():
            after = usage(proc)
            used[name] = {k: after[k] - before[name][k] for k in after}
    finally:
        for proc, _ in procs.values():
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)

    medians = {
        key: {k: float(np.median([r[k] for r in rs])) for k in rs[0]} for key, rs in runs.items()
    }
    print(f"\none-row dataframe_split requests, median of {args.rounds} interleaved runs of "
          f"{args.seconds:.0f} s, {os.cpu_count()} cores (load average before: {load_before}), "
          "1 worker each, monitoring on\n")  # fmt: skip
    print(f"{'server':14} {'clients':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for (name, clients), r in sorted(medians.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"{name:14} {clients:>7} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{r['errors']:>7.0f}")  # fmt: skip
    print()
    for name, u in used.items():
        served = sum(
            r["rps"] * args.seconds for (n, _), rs in runs.items() if n == name for r in rs
        )
        print(f"{name}: CPU server {u['server_cpu']:.1f} s, helper {u['helper_cpu']:.1f} s; "
              f"server waited for a CPU {1e6 * u['server_wait'] / served:.0f} µs a request; "
              f"server context switches a request {u['server_vol'] / served:.2f} voluntary, "
              f"{u['server_invol'] / served:.3f} involuntary; helper wake-ups "
              f"{u['helper_vol'] / elapsed_s:.1f}/s, preempted "
              f"{u['helper_invol'] / elapsed_s:.1f}/s")  # fmt: skip
    total = sum(copies.values())
    print(f"shadow copies: {copies.get('answered', 0):.0f} answered "
          f"({100 * copies.get('answered', 0) / max(total, 1):.1f} %), "
          f"{copies.get('failed', 0):.0f} failed, {copies.get('dropped', 0):.0f} dropped "
          f"({100 * copies.get('dropped', 0) / max(total, 1):.1f} % of {total:.0f})")  # fmt: skip
    for clients in args.clients:
        on, off = medians[("shadow 100 %", clients)], medians[("no shadow", clients)]
        aa = medians[("no shadow A/A", clients)]
        p99_off = (off["p99_ms"] + aa["p99_ms"]) / 2  # both plain servers: the unshadowed p99
        rps_off = (off["rps"] + aa["rps"]) / 2
        cost = 100 * (on["p99_ms"] / p99_off - 1)
        noise = 100 * (aa["p99_ms"] / off["p99_ms"] - 1)
        print(f"{clients} client(s): p99 {on['p99_ms']:.2f} vs {p99_off:.2f} ms (the plain "
              f"servers' mean): shadowing costs {cost:+.1f} % (goal ≤ {GOAL_PCT:g} %); the "
              f"plain servers differ by {noise:+.1f} % (A/A: the noise); throughput "
              f"{100 * (on['rps'] / rps_off - 1):+.1f} %")  # fmt: skip


if __name__ == "__main__":
    main()
