"""Alerting: how fast a threshold crossing reaches a webhook, and rule evaluation throughput.

Run from the repository root::

    .venv/bin/python benchmarks/alerting.py              # 50 latency trials, 10,000 series
    .venv/bin/python benchmarks/alerting.py --trials 20 --series 2000

1. **Crossing → webhook.** A real ``shipyard daemon`` process (``--tick 0.1``, rule ``for: 0``,
   route ``group_wait: 0``) watches a SQLite store; this process writes a point above the
   threshold (a new label set each trial) and times until a stdlib HTTP receiver on 127.0.0.1
   has the notification. Goal (issue 6): p99 ≤ 1 s. Peer, in the same run when the binaries
   are installed: Prometheus 2.42 (scrape and evaluation every 1 s, scraping Shipyard's
   ``/metrics``) → Alertmanager 0.25 (``group_wait: 0s``) → the same receiver.
2. **Throughput.** One threshold rule over 10,000 series (1 % above the threshold): the time of
   one evaluation (read the newest point of every series) and of one full cycle (evaluation,
   state changes, grouping, outbox rows). Peer: Prometheus' own ``evaluationTime`` of the same
   exported rule over the same 10,000 series scraped from ``/metrics``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from shipyard.alerting.config import build_config
from shipyard.alerting.cycle import evaluate
from shipyard.alerting.defaults import default_rules
from shipyard.alerting.export import prometheus_rule_file
from shipyard.alerting.exposition import MetricsServer
from shipyard.alerting.rules import evaluate_rule
from shipyard.store import Store
from shipyard.store.tables import MetricPoint

DAEMON_MAIN = (
    "import typer\nfrom shipyard.cli.daemon import register\napp = typer.Typer()\n"
    "@app.callback()\ndef root() -> None: ...\nregister(app)\napp()\n"
)


class Receiver:
    """Records the arrival time of each alert by its ``trial`` label."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.event = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                now = time.time()
                for alert in body.get("alerts", []):
                    trial = alert["labels"].get("trial")
                    if trial is not None and alert["status"] == "firing":
                        outer.arrivals.setdefault(trial, now)
                outer.event.set()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait(self, trial: str, timeout_s: float) -> float | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if trial in self.arrivals:
                return self.arrivals[trial]
            self.event.wait(0.005)
            self.event.clear()
        return None


def _point(name: str, labels: dict[str, str], ts: float, value: float) -> MetricPoint:
    return MetricPoint.of(name, labels, ts, value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} never answered")


@contextmanager
def _processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.terminate()
        for proc in started:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _trials(store: Store, receiver: Receiver, metric: str, n: int, timeout_s: float) -> list[float]:
    latencies = []
    for i in range(n):
        trial = f"t{i}-{os.getpid()}"
        written = time.time()
        with store.session() as s:
            s.add(_point(metric, {"trial": trial}, written, 0.9))
        arrived = receiver.wait(trial, timeout_s)
        latencies.append((arrived - written) if arrived else float("inf"))
    return latencies


def shipyard_latency(work: Path, trials: int) -> list[float]:
    home = work / "home"
    home.mkdir(parents=True)
    receiver = Receiver()
    (home / "alerting.yaml").write_text(
        yaml.safe_dump(
            {
                "route": {"receiver": "hook", "group_by": ["trial"], "group_wait": 0},
                "receivers": [{"name": "hook", "type": "webhook", "url": receiver.url}],
                "defaults": {r.name: False for r in default_rules()},
                "rules": [
                    {"name": "Crossed", "metric": "bench_value", "threshold": 0.5, "lookback": "1m"}
                ],
            }
        )
    )
    store = Store(f"sqlite:///{home / 'shipyard.db'}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env["SHIPYARD_HOME"] = str(home)
    with _processes() as procs:
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", DAEMON_MAIN, "daemon", "--tick", "0.1"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        time.sleep(3)  # the daemon's imports and first tick
        return _trials(store, receiver, "bench_value", trials, 10)


def prometheus_latency(work: Path, trials: int) -> list[float]:
    store = Store(f"sqlite:///{work / 'prom-peer.db'}")
    receiver = Receiver()
    cfg = build_config(
        {
            "defaults": {r.name: False for r in default_rules()},
            "rules": [{"name": "Crossed", "metric": "bench_value", "threshold": 0.5}],
        },
        home=work,
    )
    (work / "rules.yml").write_text(prometheus_rule_file(cfg.rules))
    am_port, prom_port = _free_port(), _free_port()
    (work / "am.yml").write_text(
        yaml.safe_dump(
            {
                "route": {
                    "receiver": "hook",
                    "group_by": ["trial"],
                    "group_wait": "0s",
                    "group_interval": "1s",
                    "repeat_interval": "1h",
                },
                "receivers": [{"name": "hook", "webhook_configs": [{"url": receiver.url}]}],
            }
        )
    )
    metrics = MetricsServer(store).start()
    (work / "prom.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(work / "rules.yml")],
                "alerting": {
                    "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
                },
                "scrape_configs": [
                    {
                        "job_name": "shipyard",
                        "static_configs": [{"targets": [f"127.0.0.1:{metrics.port}"]}],
                    }
                ],
            }
        )
    )
    try:
        with _processes() as procs:
            procs.append(
                subprocess.Popen(
                    [
                        "prometheus-alertmanager",
                        f"--config.file={work / 'am.yml'}",
                        f"--storage.path={work / 'am'}",
                        f"--web.listen-address=127.0.0.1:{am_port}",
                        "--cluster.listen-address=",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            procs.append(
                subprocess.Popen(
                    [
                        "prometheus",
                        f"--config.file={work / 'prom.yml'}",
                        f"--storage.tsdb.path={work / 'prom'}",
                        f"--web.listen-address=127.0.0.1:{prom_port}",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            _wait_http(f"http://127.0.0.1:{am_port}/-/ready")
            _wait_http(f"http://127.0.0.1:{prom_port}/-/ready")
            time.sleep(2)
            return _trials(store, receiver, "bench_value", trials, 15)
    finally:
        metrics.stop()


def throughput(work: Path, series: int) -> dict[str, float]:
    store = Store(f"sqlite:///{work / 'throughput.db'}")
    now = time.time()
    with store.session() as s:
        s.add_all(
            _point(
                "bench_series",
                {"model": f"m{i % 100}", "shard": str(i)},
                now - 5,
                0.9 if i % 100 == 0 else 0.1,
            )
            for i in range(series)
        )
    cfg = build_config(
        {
            "route": {"group_by": ["model"], "group_wait": 0},
            "defaults": {r.name: False for r in default_rules()},
            "rules": [{"name": "Hot", "metric": "bench_series", "threshold": 0.5}],
        },
        home=work,
    )
    rule = cfg.rules[0]
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        with store.session() as s:
            hits = evaluate_rule(s, rule, now)
        timings.append(time.perf_counter() - started)
    assert len(hits) == series // 100
    started = time.perf_counter()
    evaluate(store, cfg, now)  # creates the alerts and the outbox rows
    first_cycle = time.perf_counter() - started
    cycles = []
    for k in range(3):
        started = time.perf_counter()
        evaluate(store, cfg, now + k + 1)
        cycles.append(time.perf_counter() - started)
    result = {
        "eval_s": statistics.median(timings),
        "first_cycle_s": first_cycle,
        "steady_cycle_s": statistics.median(cycles),
    }
    if shutil.which("prometheus"):
        result["prometheus_eval_s"] = _prometheus_eval_time(work, store, cfg.rules)
    return result


def _prometheus_eval_time(work: Path, store: Store, rules: Any) -> float:
    (work / "tp-rules.yml").write_text(prometheus_rule_file(rules))
    metrics = MetricsServer(store).start()
    port = _free_port()
    (work / "tp.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(work / "tp-rules.yml")],
                "scrape_configs": [
                    {
                        "job_name": "shipyard",
                        "static_configs": [{"targets": [f"127.0.0.1:{metrics.port}"]}],
                    }
                ],
            }
        )
    )
    samples: list[float] = []
    try:
        with _processes() as procs:
            procs.append(
                subprocess.Popen(
                    [
                        "prometheus",
                        f"--config.file={work / 'tp.yml'}",
                        f"--storage.tsdb.path={work / 'tp'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            _wait_http(f"http://127.0.0.1:{port}/-/ready")
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and len(samples) < 5:
                time.sleep(1.1)
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules") as r:
                    group = json.loads(r.read())["data"]["groups"][0]
                firing = sum(len(rule.get("alerts", [])) for rule in group["rules"])
                if firing:  # evaluated over the scraped series
                    samples.append(float(group["evaluationTime"]))
    finally:
        metrics.stop()
    return statistics.median(samples) if samples else float("nan")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--peer-trials", type=int, default=20)
    parser.add_argument("--series", type=int, default=10_000)
    args = parser.parse_args()
    have_peer = all(shutil.which(b) for b in ("prometheus", "prometheus-alertmanager"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = [("shipyard daemon (tick 0.1 s)", shipyard_latency(work / "s", args.trials))]
        if have_peer:
            (work / "p").mkdir()
            rows.append(
                ("prometheus 1 s + alertmanager", prometheus_latency(work / "p", args.peer_trials))
            )
        (work / "t").mkdir()
        tp = throughput(work / "t", args.series)
    print("\nthreshold crossing → webhook (for: 0, group_wait: 0)")
    print(f"{'system':34} {'trials':>6} {'p50 s':>8} {'p99 s':>8} {'max s':>8}")
    for name, lat in rows:
        print(
            f"{name:34} {len(lat):6d} {_pct(lat, 0.5):8.3f} {_pct(lat, 0.99):8.3f} {max(lat):8.3f}"
        )
    verdict = "met" if _pct(rows[0][1], 0.99) <= 1.0 else "NOT met"
    print(f"goal p99 ≤ 1 s: {verdict}")
    print(f"\nrule evaluation over {args.series:,} series (1 % above threshold), SQLite")
    print(f"{'step':44} {'seconds':>8} {'series/s':>10}")
    for label, key in (
        ("shipyard: evaluate one threshold rule", "eval_s"),
        ("shipyard: first cycle (alerts + outbox rows)", "first_cycle_s"),
        ("shipyard: steady cycle", "steady_cycle_s"),
        ("prometheus 2.42: rule group evaluationTime", "prometheus_eval_s"),
    ):
        if key in tp:
            print(f"{label:44} {tp[key]:8.4f} {args.series / tp[key]:10,.0f}")


if __name__ == "__main__":
    main()
