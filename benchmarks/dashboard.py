"""Dashboard page times on a busy team's volumes (issue 14): server time per page (p50, p99)
and first paint in the test browser.

A workspace is seeded as ``benchmarks/control_plane.py`` seeds it (10,000 runs of 3 steps,
100 models of 5 versions, 1,000,000 metric points, 10,000 audit events), plus 200 features'
drift scores over two days for one data pipeline with its feature drift finding (every column's
bins as evidence, what a feature's page opens), a shared pool with its usage series, and a
rollout per model of the first ten; then ``shipyard server`` runs as a real subprocess on a
real socket. Each page is fetched ``--repeat`` times by one signed-in client (the time of a
request on the loopback: the server's time plus a few hundred microseconds), and then opened
once in headless Chromium (Debian's, driven by Playwright) with a cold cache, reading
``first-contentful-paint`` from the page's own Performance timeline.

Goals: every page's p99 ≤ 200 ms; first paint ≤ 1 s.

    .venv/bin/python benchmarks/dashboard.py [--repeat 30] [--backend sqlite|postgresql]
        [--runs 10000] [--points 1000000] [--only /ui/monitors]

``--only`` keeps the pages whose path starts with one of its prefixes (repeat it).
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from control_plane import (
    drop_schema,
    free_port,
    pg_schema_url,
    seed,
    stop,
    wait_ready,
)

GOAL_P99_MS = 200.0
GOAL_PAINT_MS = 1000.0
FEATURES = 200
CHROMIUM = "/usr/bin/chromium"


def drift_finding(features: int, rng: np.random.Generator) -> Any:
    """The feature drift verdict of 2,000 rows against 2,000 of ``features`` numeric columns,
    one in ten shifted: what a feature's page opens (every column's bins are in it)."""
    import pandas as pd

    from shipyard.monitoring.config import resolve_monitors
    from shipyard.monitoring.data import feature_drift
    from shipyard.stats import DatasetProfile

    names = [f"feature_{f:03d}" for f in range(features)]
    shift = np.array([0.5 if f % 10 == 0 else 0.0 for f in range(features)])
    ref = pd.DataFrame(rng.normal(size=(2000, features)), columns=names)
    cur = pd.DataFrame(rng.normal(size=(2000, features)) + shift, columns=names)
    spec = resolve_monitors("data").monitors["feature_drift"]
    return feature_drift(
        spec, "pipeline-00", "events", DatasetProfile.from_frame(ref),
        DatasetProfile.from_frame(cur), None,
    )  # fmt: skip


def seed_dashboard(db_url: str, home: Path, features: int) -> dict[str, str]:
    """What control_plane.seed leaves out and the dashboard draws: drift per feature, a pool
    with usage, rollouts. Returns names for the pages' URLs."""
    from sqlalchemy import insert, select

    from shipyard.deploy.rollout import start_rollout
    from shipyard.monitoring.findings import add_checks
    from shipyard.quota.pools import apply_pools, read_pool_file
    from shipyard.store.tables import MetricPoint, PipelineRecord, Run, labels_key
    from shipyard.workspace import Workspace

    ws = Workspace.open(home=home, db_url=db_url)
    now = time.time()
    rng = np.random.default_rng(0)
    rows = []
    for f in range(features):
        labels = {"pipeline": "pipeline-00", "dataset": "events", "column": f"feature_{f:03d}"}
        key = labels_key(labels)
        for h in range(96):
            value = float(abs(rng.normal(0.05, 0.03)))
            rows.append({"name": "shipyard_drift_score", "labels": labels, "labels_key": key,
                         "ts": now - (96 - h) * 1800.0, "value": value})  # fmt: skip
    for resource, cap in (("cpu", 64.0), ("memory", 256 * 2.0**30)):
        labels = {"pool": "team", "resource": resource}
        rows += [{"name": "shipyard_quota_pool_reserved", "labels": labels,
                  "labels_key": labels_key(labels), "ts": now - (288 - i) * 300.0,
                  "value": cap * (0.3 + 0.5 * i / 288)} for i in range(288)]  # fmt: skip
    with ws.store.session() as s:
        s.execute(insert(MetricPoint), rows)
        add_checks(s, [drift_finding(features, rng)], now - 60)
        run_id = s.scalar(select(Run.id).where(Run.status == "failed").limit(1))
        s.get(PipelineRecord, "pipeline-00")
    pools = home / "pools.yaml"
    pools.write_text(
        "pools:\n  - name: team\n    capacity: {cpu: 64, memory: 256Gi}\n    members:\n"
        "      - {pipeline: pipeline-00, share: 0.5}\n"
        "      - {pipeline: pipeline-01, share: 0.25}\n"
    )
    apply_pools(ws.store, read_pool_file(pools, 0.5), ws.clock, actor="setup")
    rollout = ""
    for m in range(10):
        rollout = start_rollout(ws.store, f"model-{m:03d}", 5, actor="bob", author="bob",
                                clock=ws.clock).id  # fmt: skip
    ws.store.dispose()
    return {"run": run_id or "", "rollout": rollout}


def pages(names: dict[str, str]) -> list[str]:
    return [
        "/ui/", "/ui/runs",
        "/ui/runs?" + urlencode({"status": "failed", "pipeline": "pipeline-03"}),
        f"/ui/runs/{names['run']}", f"/ui/runs/{names['run']}/logs/fit", "/ui/rollouts",
        f"/ui/rollouts/{names['rollout']}", "/ui/models", "/ui/models/model-007", "/ui/quota",
        "/ui/monitors", "/ui/monitors/pipeline-00",
        "/ui/monitors/pipeline-00/features/feature_010?dataset=events",
        "/ui/monitors/served/model-007", "/ui/alerts", "/ui/audit",
    ]  # fmt: skip


def sign_in(port: int, token: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    origin = f"http://127.0.0.1:{port}"
    form = {"Origin": origin, "Content-Type": "application/x-www-form-urlencoded"}
    conn.request("POST", "/ui/login", body=urlencode({"token": token}), headers=form)
    answer = conn.getresponse()
    answer.read()
    cookie = answer.getheader("set-cookie", "").split(";")[0]
    conn.close()
    if answer.status != 303 or not cookie:
        raise RuntimeError(f"sign-in failed: {answer.status}")
    return cookie


def server_times(port: int, cookie: str, path: str, repeat: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    status = 0
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        conn.request("GET", path, headers={"Cookie": cookie})
        answer = conn.getresponse()
        answer.read()
        status = answer.status
        if i:  # the first answer warms caches and is not counted
            times.append((time.perf_counter() - t0) * 1000)
    conn.close()
    a = np.array(times)
    return {
        "status": status,
        "p50": float(np.percentile(a, 50)),
        "p99": float(np.percentile(a, 99)),
    }


def first_paints(port: int, cookie: str, paths: list[str]) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    name, _, value = cookie.partition("=")
    out: dict[str, float] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        for path in paths:
            context = browser.new_context()  # a cold cache each time: plotly.js fetched too
            context.add_cookies(
                [{"name": name, "value": value, "url": f"http://127.0.0.1:{port}/ui/"}]
            )
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{port}{path}", wait_until="load")
            page.wait_for_function(
                "() => performance.getEntriesByName('first-contentful-paint').length > 0",
                timeout=10_000,
            )
            paint: Any = page.evaluate(
                "() => (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime"
            )
            out[path] = float(paint) if paint is not None else float("nan")
            context.close()
        browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--audits", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=FEATURES)
    parser.add_argument("--only", action="append", default=[], metavar="PREFIX")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="shipyard-dash-"))
    home = work / "home"
    schema = None
    if args.backend == "sqlite":
        db_url = f"sqlite:///{home / 'store.db'}"
    else:
        db_url, schema = pg_schema_url()
    proc = None
    try:
        print(f"seeding ({args.backend}):", flush=True)
        token = seed(db_url, home, args.runs, args.models, args.points, args.audits)
        names = seed_dashboard(db_url, home, args.features)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
        env |= {"SHIPYARD_HOME": str(home), "SHIPYARD_DB_URL": db_url}
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "shipyard", "server", "--port", str(port)],
            env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        wait_ready(port)
        cookie = sign_in(port, token)
        paths = [p for p in pages(names) if not args.only or p.startswith(tuple(args.only))]
        rows = [(path, server_times(port, cookie, path, args.repeat)) for path in paths]
        paints = first_paints(port, cookie, paths) if Path(CHROMIUM).exists() else {}
    finally:
        if proc is not None:
            stop(proc)
        if schema is not None:
            drop_schema(schema)
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\n{args.backend}: {args.runs:,} runs, {args.models} models, {args.features} features, "
        f"{args.points:,} metric points; {args.repeat} requests per page, one client"
    )
    width = max(len(p) for p, _ in rows)
    print(f"  {'page':<{width}}  status  {'p50 ms':>7}  {'p99 ms':>7}  {'paint ms':>8}")
    slow = 0
    for path, r in rows:
        paint = paints.get(path, float("nan"))
        flag = ""
        if r["p99"] > GOAL_P99_MS or paint > GOAL_PAINT_MS or r["status"] != 200:
            flag = "  over the goal"
            slow += 1
        figures = f"{r['status']:>6}  {r['p50']:7.1f}  {r['p99']:7.1f}  {paint:8.0f}"
        print(f"  {path:<{width}}  {figures}{flag}")
    print(f"\ngoals: p99 ≤ {GOAL_P99_MS:.0f} ms, first paint ≤ {GOAL_PAINT_MS:.0f} ms; {slow} over")


if __name__ == "__main__":
    main()
