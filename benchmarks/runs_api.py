"""``GET /api/v1/runs`` on 10,000 runs: ``python benchmarks/runs_api.py [--runs N] [--repeat R]``.

A control plane on a real socket over a fresh workspace (SQLite in a temporary folder and, when
``SHIPYARD_TEST_POSTGRES_URL`` is set, PostgreSQL in a temporary schema) holding N runs of 20
pipelines; a viewer asks for the first page (50 and 1000 runs), one pipeline's runs, the rare
``status=running`` runs, and a page deep in the listing (its cursor taken from a walk), R times
each, timed from request to parsed answer; ``GET /whoami`` (authentication and nothing else) is
the floor under every request. Goal (issue 13): p99 ≤ 100 ms for the first page.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn
from sqlalchemy import create_engine, insert, text

from shipyard.api.app import create_app
from shipyard.identity.accounts import bind_role
from shipyard.identity.tokens import create_token
from shipyard.store.tables import PipelineRecord, Run
from shipyard.workspace import Workspace

PIPELINES = 20


def seed(ws: Workspace, runs: int) -> None:
    t0 = 1_700_000_000.0
    rows: list[dict[str, Any]] = [
        {
            "id": uuid.uuid4().hex,
            "pipeline": f"p{i % PIPELINES:02d}",
            "kind": ("data", "training", "validation")[i % 3],
            "file": "bench.py",
            "status": "running" if i % 500 == 0 else ("succeeded", "failed")[i % 7 == 0],
            "params": {"i": i},
            "tags": {},
            "executor": "local",
            "created_by": "bench",
            "created_at": t0 + i * 0.5,
            "started_at": t0 + i * 0.5,
            "ended_at": t0 + i * 0.5 + 30,
        }
        for i in range(runs)
    ]
    with ws.store.session() as s:
        for p in range(PIPELINES):
            s.add(
                PipelineRecord(
                    name=f"p{p:02d}", kind="data", file="bench.py", spec={}, updated_at=t0
                )
            )
        s.flush()
        s.execute(insert(Run), rows)


def serve(ws: Workspace) -> tuple[str, uvicorn.Server, threading.Thread]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(ws), host="127.0.0.1", port=port, log_level="warning", lifespan="off",
        access_log=False,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}/api/v1", server, thread


def timed(
    api: httpx.Client, params: dict[str, Any], repeat: int, path: str = "/runs"
) -> tuple[float, float, int]:
    api.get(path, params=params).raise_for_status()  # warm
    took = []
    count = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        answer = api.get(path, params=params)
        answer.raise_for_status()
        count = len(answer.json().get("items", ()))
        took.append(time.perf_counter() - t0)
    ms = np.array(took) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), count


def bench(label: str, db_url: str, home: Path, runs: int, repeat: int) -> None:
    ws = Workspace.open(home=home, db_url=db_url)
    seed(ws, runs)
    now = time.time()
    bind_role(ws.store, "viewer", "viewer", "*", actor="bench", now=now, mode="embedded")
    token = create_token(ws.store, "viewer", actor="bench", now=now, mode="embedded").secret
    url, server, thread = serve(ws)
    try:
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as api:
            cursor = None
            for _ in range(runs // 1000 - 1):  # to the last full page
                got = api.get(
                    "/runs", params={"limit": 1000, **({"cursor": cursor} if cursor else {})}
                )
                cursor = got.json()["next"]
            cases: dict[str, dict[str, Any]] = {
                "first page, 50": {"limit": 50},
                "first page, 1000": {"limit": 1000},
                "one pipeline, 50": {"pipeline": "p07", "limit": 50},
                "status=running": {"status": "running", "limit": 50},
                "kind+since, 50": {"kind": "training", "since": 1_700_000_000.0 + runs * 0.25},
                "deep page, 50": {"limit": 50, "cursor": cursor},
            }
            p50, p99, _ = timed(api, {}, repeat, "/whoami")
            print(
                f"{label:10} {'whoami (floor)':18} {0:5} runs  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms"
            )
            for name, params in cases.items():
                p50, p99, count = timed(api, params, repeat)
                print(f"{label:10} {name:18} {count:5} runs  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        ws.store.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        bench("sqlite", f"sqlite:///{home / 'store.db'}", home, args.runs, args.repeat)
    pg = os.environ.get("SHIPYARD_TEST_POSTGRES_URL")
    if not pg:
        return
    schema = f"b_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        sep = "&" if "?" in pg else "?"
        with tempfile.TemporaryDirectory() as tmp:
            url = f"{pg}{sep}options=-csearch_path%3D{schema}"
            bench("postgresql", url, Path(tmp), args.runs, args.repeat)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
