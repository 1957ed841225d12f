"""Control-plane list latency: the first page of every list, under 8 concurrent clients, over a
store the size of a busy team's (issue 13).

A workspace is seeded with 10,000 runs (3 steps each), 100 models (5 versions each, a
``champion`` alias), 1,000,000 metric points and 10,000 audit events, bulk-inserted through
the store's tables (executemany; COPY on PostgreSQL); then ``shipyard server`` runs as a real
subprocess on a real socket, and for each GET operation of the registry (those with path
parameters filled in from the seeded data, read from the list their path hangs under) 8
closed-loop clients (one process each, a keep-alive connection each) ask for its first page for
``--seconds``. The table per backend gives requests/s, p50 and p99, and the p50 of one client
alone (what a request costs without the queue of the other 7 in front of it).

Goal (issue 13): the first page's p99 ≤ 100 ms; the rows over it are flagged. The peer is the
goal itself: no other product serves this API (MLflow's tracking server would be one for the
runs list only; it is not run here).

    .venv/bin/python benchmarks/control_plane.py [--seconds 5] [--clients 8] [--workers N]
        [--backends sqlite postgresql] [--runs 10000] [--points 1000000]

PostgreSQL: ``SHIPYARD_TEST_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``), in a fresh schema dropped afterwards.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

POSTGRES_URL = os.environ.get(
    "SHIPYARD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
GOAL_P99_MS = 100.0
CHUNK = 50_000
STATUSES = ("succeeded", "succeeded", "succeeded", "failed", "running", "cancelled")
SERIES = ("loss", "accuracy", "shipyard_serving_request_duration_seconds", "shipyard_quota_used")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def chunks(rows: list[dict[str, Any]], size: int = CHUNK) -> Any:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def seed(db_url: str, home: Path, runs: int, models: int, points: int, audits: int) -> str:
    """Fill a fresh workspace; returns an admin's API token. Prints how long each part took."""
    from sqlalchemy import insert

    from shipyard.audit import record
    from shipyard.identity.accounts import bind_role
    from shipyard.identity.tokens import create_token
    from shipyard.store.registry import ModelAlias, ModelVersion, RegisteredModel
    from shipyard.store.tables import PipelineRecord, Run, StepRun
    from shipyard.workspace import Workspace

    ws = Workspace.open(home=home, db_url=db_url)
    store = ws.store
    rng = random.Random(0)
    now = time.time()
    t0 = time.perf_counter()
    pipelines = [f"pipeline-{i:02d}" for i in range(20)]
    run_rows, step_rows = [], []
    for i in range(runs):
        created = now - (runs - i) * 60.0
        status = STATUSES[i % len(STATUSES)]
        run_id = uuid.UUID(int=rng.getrandbits(128)).hex[:12]
        run_rows.append(
            {
                "id": run_id, "pipeline": pipelines[i % 20], "kind": "training",
                "file": "pipelines/train.py", "status": status, "params": {"lr": 0.01, "i": i},
                "tags": {"team": f"t{i % 7}"}, "executor": "local", "created_by": "bob",
                "created_at": created, "started_at": created,
                "ended_at": None if status == "running" else created + 50,
                "exit_reason": "exit code 1" if status == "failed" else None,
            }
        )  # fmt: skip
        for n, step in enumerate(("load", "fit", "evaluate")):
            step_rows.append(
                {
                    "id": uuid.UUID(int=rng.getrandbits(128)).hex[:12], "run_id": run_id,
                    "step": step, "status": status, "attempt": 1,
                    "started_at": created + n * 10, "ended_at": created + n * 10 + 9,
                    "exit_reason": None, "exit_code": 0, "peak_rss_bytes": 2**28,
                    "cpu_seconds": 8.5, "resources": {"cpu": 1, "memory": 2**30},
                    "enforcement": {},
                }
            )  # fmt: skip
    with store.session() as s:
        s.execute(
            insert(PipelineRecord),
            [
                {"name": p, "kind": "training", "file": "pipelines/train.py", "schedule": None,
                 "spec": {"steps": [], "params": {}}, "updated_at": now}
                for p in pipelines
            ],
        )  # fmt: skip
        for part in chunks(run_rows):
            s.execute(insert(Run), part)
        for part in chunks(step_rows):
            s.execute(insert(StepRun), part)
    t_runs = time.perf_counter() - t0
    print(f"  {runs:,} runs and {len(step_rows):,} steps: {t_runs:.1f} s", flush=True)

    t0 = time.perf_counter()
    with store.session() as s:
        s.execute(
            insert(RegisteredModel),
            [{"name": f"model-{m:03d}", "description": "", "default_alias": "champion",
              "tags": {}, "created_at": now - 86400 + m, "created_by": "bob"}
             for m in range(models)],
        )  # fmt: skip
        s.execute(
            insert(ModelVersion),
            [{"model": f"model-{m:03d}", "version": v, "flavor": "sklearn",
              "artifact_digest": f"{m:032x}{v:032x}", "signature": {}, "metrics": {"acc": 0.9},
              "tags": {}, "lineage": {}, "run_id": run_rows[(m * 5 + v) % runs]["id"],
              "description": "", "created_at": now - 86400 + m * 10 + v, "created_by": "bob"}
             for m in range(models) for v in range(1, 6)],
        )  # fmt: skip
        s.execute(
            insert(ModelAlias),
            [{"model": f"model-{m:03d}", "alias": "champion", "version": 5, "updated_at": now,
              "updated_by": "bob"} for m in range(models)],
        )  # fmt: skip
    t_models = time.perf_counter() - t0
    print(f"  {models} models, {models * 5} versions: {t_models:.1f} s", flush=True)

    t0 = time.perf_counter()
    insert_points(store, points, [r["id"] for r in run_rows[-200:]], now)
    t_points = time.perf_counter() - t0
    print(f"  {points:,} metric points: {t_points:.1f} s", flush=True)

    t0 = time.perf_counter()
    per_tx = 1000
    for start in range(0, audits, per_tx):
        with store.session() as s:
            for i in range(start, min(audits, start + per_tx)):
                record(
                    s, actor="bob", action="run.start", subject=("run", run_rows[i % runs]["id"]),
                    details={"pipeline": run_rows[i % runs]["pipeline"]}, now=now - audits + i,
                    mode="embedded",
                )  # fmt: skip
    bind_role(store, "bench", "admin", "*", actor="setup", now=now, mode="embedded")
    token = create_token(store, "bench", actor="setup", now=now, mode="embedded").secret
    print(f"  {audits:,} audit events: {time.perf_counter() - t0:.1f} s", flush=True)
    store.dispose()
    return token


def insert_points(store: Any, points: int, run_ids: list[str], now: float) -> None:
    """``points`` metric points in series of 1,000: COPY on PostgreSQL, executemany on SQLite
    (the driver's, on a raw connection: SQLAlchemy's would build a dict per row), with the
    table's indexes dropped during the load and built again after it."""
    from shipyard.store.tables import MetricPoint, labels_key

    def rows() -> Any:
        per_series = 1000
        for series in range(points // per_series + 1):
            name = SERIES[series % len(SERIES)]
            labels = {"run_id": run_ids[series % len(run_ids)], "shard": str(series)}
            key = labels_key(labels)
            text = json.dumps(labels)
            base = now - per_series * 15.0
            for i in range(min(per_series, points - series * per_series)):
                yield name, text, key, base + i * 15.0, float(i % 97) / 97.0

    indexes = list(MetricPoint.__table__.indexes)
    with store.engine.begin() as conn:  # a bulk load builds its indexes once, afterwards
        for index in indexes:
            index.drop(conn)
    raw = store.engine.raw_connection()
    try:
        cur = raw.cursor()
        if store.dialect == "postgresql":
            with cur.copy(
                "COPY metric_points (name, labels, labels_key, ts, value) FROM STDIN"
            ) as copy:
                for row in rows():
                    copy.write_row(row)
        else:  # the JSON column holds JSON text on SQLite: what json.dumps wrote
            cur.execute("BEGIN")  # the store's connections autocommit: one transaction, not 1M
            cur.executemany(
                "INSERT INTO metric_points (name, labels, labels_key, ts, value) "
                "VALUES (?, ?, ?, ?, ?)",
                rows(),
            )
        raw.commit()
    finally:
        raw.close()
    with store.engine.begin() as conn:
        for index in indexes:
            index.create(conn)


def get(port: int, path: str, token: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def endpoints(port: int, token: str, query: dict[str, str]) -> list[tuple[str, str, bool]]:
    """(operation, path, is a list) for every GET operation: the ones with path parameters
    filled in from the first item of the list their path hangs under (``/models/{name}/versions``
    from ``GET /models``), required query parameters from ``query`` (by operation), the ones
    that cannot be filled left out (and said so). A list is an operation paged by a cursor: the
    goal is about those."""
    from shipyard.api.app import API_PREFIX
    from shipyard.api.operations import load_all

    gets = sorted((op for op in load_all().values() if op.method == "GET"), key=lambda o: o.path)
    lists = {op.path for op in gets if not op.path_params}
    known: dict[tuple[str, str], str] = {}
    chosen, missing = [], []
    for op in sorted(gets, key=lambda o: (len(o.path_params), o.path)):
        path = op.path
        for param in op.path_params:
            parent = path.split("/{" + param + "}")[0]
            if (parent, param) not in known and (parent in lists or "{" not in parent):
                status, body = get(port, API_PREFIX + parent, token)
                items = json.loads(body).get("items", []) if status == 200 else []
                for item in items[:1]:
                    for key in (param, "id", "name", "pipeline", "version"):
                        if isinstance(item, dict) and isinstance(item.get(key), str | int):
                            known[parent, param] = str(item[key])
                            break
            if (parent, param) not in known:
                break
            path = path.replace("{" + param + "}", known[parent, param])
        required = [
            name
            for name, field in (op.query.model_fields.items() if op.query is not None else ())
            if field.is_required()
        ]
        if "{" in path or (required and op.name not in query):
            missing.append(op.name)
            continue
        is_list = op.query is not None and "cursor" in op.query.model_fields
        suffix = f"?{query[op.name]}" if op.name in query else ""
        chosen.append((op.name, API_PREFIX + path + suffix, is_list))
    if missing:
        print(f"  left out (no seeded value for their path or query): {', '.join(missing)}")
    return chosen


def required_queries(db_url: str) -> dict[str, str]:
    """Query strings for the GET operations that need one, from the seeded data."""
    from urllib.parse import urlencode

    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            labels = conn.execute(
                text("SELECT labels FROM metric_points WHERE name = 'loss' LIMIT 1")
            ).scalar_one()
    finally:
        engine.dispose()
    labels = json.loads(labels) if isinstance(labels, str) else labels
    series = [("name", "loss"), *(("label", f"{k}={v}") for k, v in sorted(labels.items()))]
    return {"runs.logs": "step=fit", "monitors.series": urlencode(series)}


def _client(
    port: int,
    path: str,
    token: str,
    seconds: float,
    start_at: float,
    out: mp.Queue,  # type: ignore[type-arg]
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    errors = 0
    while time.time() < start_at:
        time.sleep(0.001)
    end = start_at + seconds
    while time.time() < end:
        t0 = time.perf_counter()
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        r.read()
        latencies.append(time.perf_counter() - t0)
        errors += r.status != 200
    out.put((latencies, errors))


def load(port: int, path: str, token: str, clients: int, seconds: float) -> dict[str, float]:
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    start_at = time.time() + 0.3
    procs = [
        ctx.Process(target=_client, args=(port, path, token, seconds, start_at, out))
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    results = [out.get() for _ in range(clients)]
    for p in procs:
        p.join()
    lat = np.concatenate([np.asarray(r[0]) for r in results])
    return {
        "rps": len(lat) / seconds,
        "p50_ms": float(np.percentile(lat, 50) * 1000),
        "p99_ms": float(np.percentile(lat, 99) * 1000),
        "errors": float(sum(r[1] for r in results)),
    }


def wait_ready(port: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if get(port, "/healthz", "")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the control plane on port {port} did not become ready")


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def pg_schema_url() -> tuple[str, str]:
    from sqlalchemy import create_engine, text

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    sep = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}", schema


def drop_schema(schema: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def bench_backend(backend: str, args: argparse.Namespace) -> list[tuple[str, dict[str, float]]]:
    work = Path(tempfile.mkdtemp(prefix=f"shipyard-cp-{backend}-"))
    home = work / "home"
    schema = None
    if backend == "sqlite":
        db_url = f"sqlite:///{home / 'store.db'}"
    else:
        db_url, schema = pg_schema_url()
    proc = None
    try:
        token = seed(db_url, home, args.runs, args.models, args.points, args.audits)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
        env |= {"SHIPYARD_HOME": str(home), "SHIPYARD_DB_URL": db_url}
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "shipyard", "server", "--port", str(port),
             "--workers", str(args.workers)],
            env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        wait_ready(port)
        rows = []
        for name, path, is_list in endpoints(port, token, required_queries(db_url)):
            status, body = get(port, path, token)  # warm: the first answer is not measured
            if status != 200:
                print(f"  {name}: {status} {body[:200]!r}")
            figures = load(port, path, token, args.clients, args.seconds)
            # one client alone: what a request costs without the queue in front of it
            figures["alone_p50_ms"] = load(port, path, token, 1, 1.0)["p50_ms"]
            figures["list"] = float(is_list)
            shown = path.removeprefix("/api/v1").split("?")[0]
            rows.append((f"{name}  {shown}", figures))
            print(f"  {name} done", flush=True)
        return rows
    finally:
        if proc is not None:
            stop(proc)
        if schema is not None:
            drop_schema(schema)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="the server's worker processes (default: one per core, as Uvicorn advises)",
    )
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--audits", type=int, default=10_000)
    args = parser.parse_args()

    load_before = " ".join(f"{v:.1f}" for v in os.getloadavg())
    results = {}
    for backend in args.backends:
        print(f"{backend}:", flush=True)
        results[backend] = bench_backend(backend, args)

    print(
        f"\nfirst page (default limit) of every GET operation, {args.clients} closed-loop clients "
        f"x {args.seconds:.0f} s, server with {args.workers} worker(s); {args.runs:,} runs, "
        f"{args.models} models, {args.points:,} metric points, {args.audits:,} audit events"
    )
    over = 0
    for backend, rows in results.items():
        width = max(len(r[0]) for r in rows) if rows else 10
        print(f"\n{backend}")
        print(
            f"  {'endpoint':<{width}}  {'req/s':>8}  {'p50 ms':>8}  {'p99 ms':>8}  errors"
            f"  {'alone p50':>9}"
        )
        for name, f in rows:
            flag = ""
            if f["p99_ms"] > GOAL_P99_MS:
                flag = f"  > goal {GOAL_P99_MS:.0f} ms" if f["list"] else "  (not a list)"
            over += bool(f["list"]) and f["p99_ms"] > GOAL_P99_MS
            print(
                f"  {name:<{width}}  {f['rps']:>8.0f}  {f['p50_ms']:>8.1f}  {f['p99_ms']:>8.1f}"
                f"  {f['errors']:>6.0f}  {f['alone_p50_ms']:>9.1f}{flag}"
            )
    print(
        f"\ngoal (issue 13): a list's first page p99 <= {GOAL_P99_MS:.0f} ms; {over} list(s) "
        "over it. "
        f"Load average before: {load_before}; after: "
        + " ".join(f"{v:.1f}" for v in os.getloadavg())
    )


if __name__ == "__main__":
    main()
