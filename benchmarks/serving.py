"""Serving throughput and latency: Shipyard's model server against `mlflow models serve`.

The same scikit-learn model (trained and saved by MLflow in its own virtualenv, then imported into
Shipyard with ``import_mlflow``) behind both servers; the same closed-loop load generator (one
process per client, a keep-alive ``http.client`` connection each, one-row ``dataframe_split``
requests, a request sent as soon as the previous answer arrived); 1 and 4 concurrent clients.
Shipyard runs with monitoring on (windows, profiles, prediction log, 1 % request log) and off.

Goal (issue 5): ≥ 4× MLflow's throughput at a lower p99, monitoring costing ≤ 10 % throughput.

Head of line (issue 20): the p99 of the same one-row requests from 4 clients while a fifth client
sends maximum-size requests (the largest ``dataframe_split`` body the model's request limits let
through, 1 MiB by default), against the same 4 clients alone. Goal: at most 2× the quiet p99.

    .venv/bin/python benchmarks/serving.py [--seconds 5] [--workers 1] [--no-mlflow]

MLflow gets its own virtualenv under benchmarks/.venvs/mlflow (created on first run; its pins
clash with ours); ``--no-mlflow`` runs Shipyard's rows only, on a model trained here. MLServer is
not run: see the note printed at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MLFLOW_VENV = HERE / ".venvs" / "mlflow"
TRAIN = """
import sys, numpy as np, mlflow.sklearn
from mlflow.models import infer_signature
import pandas as pd
from sklearn.linear_model import LogisticRegression
rng = np.random.default_rng(0)
x = pd.DataFrame(rng.normal(size=(1000, 4)), columns=["f0", "f1", "f2", "f3"])
y = (x["f0"] + x["f1"] > 0).astype(int)
clf = LogisticRegression().fit(x.to_numpy(), y)
mlflow.sklearn.save_model(clf, sys.argv[1], signature=infer_signature(x, clf.predict(x.to_numpy())))
"""
TRAIN_HERE = """
import numpy as np, pandas as pd
from sklearn.linear_model import LogisticRegression
from shipyard.registry import Registry
from shipyard.workspace import Workspace
rng = np.random.default_rng(0)
x = pd.DataFrame(rng.normal(size=(1000, 4)), columns=["f0", "f1", "f2", "f3"])
y = (x["f0"] + x["f1"] > 0).astype(int)
clf = LogisticRegression().fit(x.to_numpy(), y)
Registry.of(Workspace.open()).register("bench", clf, training_data=x, alias="champion")
"""
COLUMNS = ["f0", "f1", "f2", "f3"]
BODY = json.dumps({"dataframe_split": {"columns": COLUMNS,
                                       "data": [[0.1, -0.2, 0.3, 0.05]]}}).encode()  # fmt: skip


def largest_body(max_body_bytes: int, max_rows: int) -> tuple[bytes, int]:
    """The largest ``dataframe_split`` body of random rows within both bounds, and its rows."""
    rng = np.random.default_rng(1)
    row = len(json.dumps(rng.normal(size=(1, 4)).tolist()))  # about one row's bytes
    rows = min(max_rows, max_body_bytes // row)
    while True:
        body = json.dumps(
            {"dataframe_split": {"columns": COLUMNS, "data": rng.normal(size=(rows, 4)).tolist()}}
        ).encode()
        if len(body) <= max_body_bytes:
            return body, rows
        rows = int(rows * 0.98)


def ensure_mlflow_venv() -> Path:
    python = MLFLOW_VENV / "bin" / "python"
    if not python.exists():
        print("creating the MLflow virtualenv (a few minutes, once)…", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "mlflow==3.17.*", "scikit-learn",
             "skops"],
            check=True,
        )  # fmt: skip
    return python


def warm_up(port: int, path: str, large: bytes) -> None:
    """One maximum-size request before anything is measured: what a server pays once in its
    life (Shipyard starts its decoding helper process on the first large body) is not counted
    against the head-of-line rows."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", path, large, {"Content-Type": "application/json"})
        conn.getresponse().read()
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(port: int, path: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on port {port} did not become ready")


def _client(
    port: int,
    path: str,
    seconds: float,
    start_at: float,
    out: mp.Queue,  # type: ignore[type-arg]
    body: bytes = BODY,
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"content-type": "application/json"}
    latencies: list[float] = []
    errors = 0
    while time.time() < start_at:
        time.sleep(0.001)
    end = start_at + seconds
    while True:
        t0 = time.perf_counter()
        if time.time() >= end:
            break
        conn.request("POST", path, body, headers)
        r = conn.getresponse()
        r.read()
        latencies.append(time.perf_counter() - t0)
        errors += r.status != 200
    out.put((latencies, errors))


def load(
    port: int,
    path: str,
    clients: int,
    seconds: float,
    large: bytes | None = None,
    keep: list[np.ndarray] | None = None,
) -> dict[str, float]:
    """Closed-loop one-row load from ``clients`` processes; with ``large``, one more process
    sends that body in a loop meanwhile (its figures are the ``large_*`` keys); ``keep``
    receives the one-row requests' latencies (seconds)."""
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    # one warm-up second, not measured
    warm = ctx.Process(target=_client, args=(port, path, 1.0, time.time(), out))
    warm.start()
    out.get()
    warm.join()
    start_at = time.time() + 0.5
    procs = [
        ctx.Process(target=_client, args=(port, path, seconds, start_at, out))
        for _ in range(clients)
    ]
    big_out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    if large is not None:
        procs.append(
            ctx.Process(target=_client, args=(port, path, seconds, start_at, big_out, large))
        )
    for p in procs:
        p.start()
    results = [out.get() for _ in range(clients)]
    big = big_out.get() if large is not None else None
    for p in procs:
        p.join()
    lat = np.concatenate([np.asarray(r[0]) for r in results])
    if keep is not None:
        keep.append(lat)
    figures = figures_of(lat, seconds, sum(r[1] for r in results))
    if big is not None:
        figures["large_requests"] = float(len(big[0]))
        figures["large_p50_ms"] = float(np.percentile(big[0], 50) * 1000) if big[0] else 0.0
        figures["large_errors"] = float(big[1])
    return figures


def figures_of(latencies_s: np.ndarray, seconds: float, errors: int = 0) -> dict[str, float]:
    """Requests a second, p50 and p99 (ms) and errors of one measure's latencies."""
    return {
        "rps": len(latencies_s) / seconds,
        "p50_ms": float(np.percentile(latencies_s, 50) * 1000),
        "p99_ms": float(np.percentile(latencies_s, 99) * 1000),
        "errors": float(errors),
    }


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def register_bench_model(work: Path, env: dict[str, str], mlflow: bool) -> Path | None:
    """The model both servers serve: trained by MLflow and imported, or trained here."""
    if not mlflow:
        subprocess.run([sys.executable, "-c", TRAIN_HERE], check=True, env=env, cwd=work)
        return None
    mlflow_python = ensure_mlflow_venv()
    model_dir = work / "model"
    subprocess.run([str(mlflow_python), "-c", TRAIN, str(model_dir)], check=True)
    subprocess.run(
        [sys.executable, "-c",
         "from shipyard.workspace import Workspace; from shipyard.registry import Registry, "
         f"import_mlflow; import_mlflow(Registry.of(Workspace.open()), '{model_dir}', 'bench', "
         "alias='champion')"],
        check=True, env=env, cwd=work,
    )  # fmt: skip
    return model_dir


def main() -> None:
    from shipyard.serving.limits import RequestLimits

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=1, help="Shipyard worker processes")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--no-mlflow", action="store_true", help="Shipyard's rows only")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="another Shipyard's src/ folder (e.g. `git archive` of an older commit): its servers "
        "run beside these in the same rounds, monitoring on and off, as 'baseline'",
    )
    args = parser.parse_args()

    load_before = " ".join(f"{v:.1f}" for v in os.getloadavg())
    work = Path(tempfile.mkdtemp(prefix="shipyard-bench-"))
    env = {**os.environ, "SHIPYARD_HOME": str(work / "home")}
    env = {k: v for k, v in env.items() if not k.startswith("SHIPYARD_") or k == "SHIPYARD_HOME"}
    model_dir = register_bench_model(work, env, not args.no_mlflow)
    limits = RequestLimits()
    large, large_rows = largest_body(limits.max_body_bytes, limits.max_rows)

    servers = {
        "shipyard (monitoring on)": (
            [sys.executable, "-c", "from shipyard.serving.server import run; "
             f"run('127.0.0.1', {{port}}, {args.workers}, default_model='bench')"],
            "/ping", "/invocations",
        ),
        "shipyard (monitoring off)": (
            [sys.executable, "-c", "from shipyard.serving.server import run; "
             f"run('127.0.0.1', {{port}}, {args.workers}, default_model='bench', "
             "monitoring=False)"],
            "/ping", "/invocations",
        ),
    }  # fmt: skip
    baseline_env = dict(env)
    if args.baseline_src is not None:
        # its own workspace: an older store refuses a schema a newer Shipyard migrated
        baseline_env |= {
            "PYTHONPATH": str(args.baseline_src.resolve()),
            "SHIPYARD_HOME": str(work / "baseline-home"),
        }
        subprocess.run([sys.executable, "-c", TRAIN_HERE], check=True, env=baseline_env, cwd=work)
        servers["baseline (monitoring on)"] = (
            [sys.executable, "-c", "from shipyard.serving.server import run; "
             f"run('127.0.0.1', {{port}}, {args.workers}, default_model='bench')"],
            "/ping", "/invocations",
        )  # fmt: skip
        servers["baseline (monitoring off)"] = (
            [sys.executable, "-c", "from shipyard.serving.server import run; "
             f"run('127.0.0.1', {{port}}, {args.workers}, default_model='bench', "
             "monitoring=False)"],
            "/ping", "/invocations",
        )  # fmt: skip
    if model_dir is not None:
        servers["mlflow models serve"] = (
            [str(MLFLOW_VENV / "bin" / "mlflow"), "models", "serve", "-m", str(model_dir),
             "--env-manager", "local", "-h", "127.0.0.1", "-p", "{port}"],
            "/ping", "/invocations",
        )  # fmt: skip
    procs: dict[str, tuple[subprocess.Popen[bytes], int, str]] = {}
    hol: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        for name, (cmd, ready, path) in servers.items():
            port = free_port()
            argv = [c.replace("{port}", str(port)) for c in cmd]
            mlflow_env = {**env, "PATH": f"{MLFLOW_VENV / 'bin'}:{env.get('PATH', '')}"}
            proc = subprocess.Popen(
                argv,
                env=(
                    mlflow_env
                    if name.startswith("mlflow")
                    else baseline_env
                    if name.startswith("baseline")
                    else env
                ),
                cwd=work,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            procs[name] = (proc, port, path)
            wait_ready(port, ready)
            if not name.startswith("mlflow"):
                warm_up(port, path, large)
        # Rounds interleave the servers, so that load from elsewhere on the machine hits all
        # of them alike; each figure is the median over the rounds.
        runs: dict[tuple[str, int], list[dict[str, float]]] = {}
        for round_no in range(args.rounds):
            for clients in args.clients:
                for name, (_, port, path) in procs.items():
                    runs.setdefault((name, clients), []).append(
                        load(port, path, clients, args.seconds)
                    )
            for name, (_, port, path) in procs.items():
                if not name.startswith("mlflow"):
                    for part, body in (("alone", None), ("+ large", large)):
                        hol.setdefault((name, part), []).append(
                            load(port, path, 4, args.seconds, body)
                        )
            print(f"  round {round_no + 1}/{args.rounds} done", flush=True)
    finally:
        for proc, _, _ in procs.values():
            stop(proc)
    rows = [
        (name, clients, {k: float(np.median([r[k] for r in rs])) for k in rs[0]})
        for (name, clients), rs in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]

    print(f"\none-row dataframe_split requests, median of {args.rounds} interleaved runs of "
          f"{args.seconds:.0f} s, {os.cpu_count()} cores (load average before: {load_before}), "
          f"shipyard workers={args.workers}\n")  # fmt: skip
    print(f"{'server':28} {'clients':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, clients, r in rows:
        print(f"{name:28} {clients:>7} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{r['errors']:>7.0f}")  # fmt: skip
    print()
    base = {c: r for n, c, r in rows if n.startswith("mlflow")}
    on = {c: r for n, c, r in rows if n == "shipyard (monitoring on)"}
    off = {c: r for n, c, r in rows if n == "shipyard (monitoring off)"}
    baseline_on = {c: r for n, c, r in rows if n == "baseline (monitoring on)"}
    baseline_off = {c: r for n, c, r in rows if n == "baseline (monitoring off)"}
    for clients in args.clients:
        s, o = on[clients], off[clients]
        for monitoring, ours, theirs in (("on", on, baseline_on), ("off", off, baseline_off)):
            if clients in theirs:
                mine, b = ours[clients], theirs[clients]
                print(
                    f"{clients} client(s): throughput ×{mine['rps'] / b['rps']:.2f} the "
                    f"baseline's, p99 {mine['p99_ms']:.2f} vs {b['p99_ms']:.2f} ms "
                    f"(monitoring {monitoring} both; goal: within 10 %)"
                )
        versus = ""
        if clients in base:
            m = base[clients]
            versus = (
                f"shipyard/mlflow throughput ×{s['rps'] / m['rps']:.2f} (goal ≥ 4), "
                f"p99 {s['p99_ms']:.2f} vs {m['p99_ms']:.2f} ms (goal: lower); "
            )
        print(
            f"{clients} client(s): {versus}"
            f"monitoring cost {100 * (1 - s['rps'] / o['rps']):.1f} % (goal ≤ 10 %)"
        )

    print(f"\nhead of line: 4 clients of one-row requests, alone and beside a fifth client "
          f"sending maximum-size requests ({large_rows} rows, {len(large) / 2**20:.2f} MiB: "
          f"the default limits)\n")  # fmt: skip
    print(f"{'server':28} {'4 clients':>10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'errors':>7} {'large':>6} {'large p50 ms':>13}")  # fmt: skip
    medians = {
        key: {k: float(np.median([r[k] for r in rs])) for k in rs[0]} for key, rs in hol.items()
    }
    for (name, part), r in sorted(medians.items()):
        print(f"{name:28} {part:>10} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{r['errors']:>7.0f} {r.get('large_requests', 0):>6.0f} "
              f"{r.get('large_p50_ms', 0):>13.1f}")  # fmt: skip
    for name in servers:
        if (name, "alone") in medians:
            quiet, busy = medians[(name, "alone")], medians[(name, "+ large")]
            rounds = zip(hol[(name, "alone")], hol[(name, "+ large")], strict=True)
            each = " ".join(f"×{b['p99_ms'] / a['p99_ms']:.2f}" for a, b in rounds)
            print(f"{name}: p99 beside large requests ×{busy['p99_ms'] / quiet['p99_ms']:.2f} "
                  f"the p99 alone (goal ≤ 2; each round: {each}); large requests refused: "
                  f"{busy.get('large_errors', 0):.0f}")  # fmt: skip
    if model_dir is not None:
        print("\nMLServer: not run (its 1.7.1 workers crash with uvloop 0.23 here, "
              "and it answers default tritonclient calls with 422; "
              "see shared/reference/dependencies.md).")  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
