"""Canary analysis: false rollbacks, detection power and rollback speed, against a Kayenta-style
Mann–Whitney-only judge on the same traces.

Run from the repository root::

    .venv/bin/python benchmarks/canary.py                  # 200 rollouts per scenario
    .venv/bin/python benchmarks/canary.py --rollouts 50    # quicker

1. **Judging (simulated traces).** 50 requests/s to the model; a rollout follows the default
   policy's plan (steps of 10 % and 50 % of traffic, an analysis every 120 s, at least 5 minutes
   per step; ``--interval 60`` shows the cost of judging every minute) and is judged by
   :func:`shipyard.deploy.canary.judge_arms` exactly as the control loop does it (same looks,
   same extension rule, same alpha spending). Each interval
   draws, per version: binomial errors, lognormal latencies folded into the model server's
   latency histogram buckets (what the servers flush), and Beta-distributed prediction scores.
   The traces are simulated, not served: 200 rollouts × 10 minutes of traffic per scenario
   would take 33 hours of loopback serving; the judge sees the same numbers either way.
   Scenarios: A/A (same behaviour: every rollback is false), +2 pp errors (1 % → 3 %), a
   prediction shift with identical errors and latency, a latency-spread rise with the same
   median (spinnaker #6278), and sparse errors against an error-free stable (kayenta #426).
   Peer: a Kayenta-style judge (NetflixACAJudge as documented in
   /work/shared/reference/canary-and-quota.md): per metric, Mann–Whitney U with a 98 %
   Hodges–Lehmann interval over 10-second sub-window values (error rate, mean latency, mean
   prediction), "high" when the whole interval lies above zero and the mean ratio ≥ 1.1,
   score = 100 × passed / metrics, fail below 75, any failing interval ends the canary.
2. **Rollback speed (real store, real control loop).** Two replica threads each refresh the
   live split from a SQLite store every 0.5 s (the model server's refresh interval) and route
   25 requests/s each by :func:`shipyard.deploy.routing.choose_version`; the rollout engine
   judges a canary whose flushed windows show 10 % errors and rolls it back. Measured: time
   from the committed failing verdict to the last request any replica sent to the canary.
   The same on the real model server: ``shipyard.serving`` under Uvicorn on 127.0.0.1
   (refresh 0.5 s) serves the canary to 10 % of users (``x-user-id``); the engine rolls it back;
   measured: time from the committed verdict to the last answer a canary user got from it.
3. **Production rollback on a real model server.** ``shipyard.serving`` under Uvicorn on
   127.0.0.1 (refresh 0.5 s) serves the production version; ``rollback`` (what the one
   command runs) commits and points the default alias back; measured: time from the commit to
   the last answer any request got from the rolled-back version.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats as sps

from shipyard.deploy.canary import ArmData, judge_arms
from shipyard.deploy.policy import DEFAULT_POLICY, Policy
from shipyard.serving.telemetry import LATENCY_BUCKETS_S

RATE_RPS = 50.0
INTERVAL_S = 60.0
SUBWINDOW_S = 10.0
BOUNDS_MS = np.asarray([*LATENCY_BUCKETS_S, 2 * LATENCY_BUCKETS_S[-1]]) * 1000.0


@dataclass(frozen=True)
class Behaviour:
    error: float = 0.01
    latency_median_ms: float = 20.0
    latency_sigma: float = 0.4
    pred_a: float = 2.0
    pred_b: float = 5.0


STABLE = Behaviour()
SCENARIOS: dict[str, Behaviour] = {
    "A/A (same model)": Behaviour(),
    "+2 pp errors": Behaviour(error=0.03),
    "prediction shift only": Behaviour(pred_a=2.6),
    "latency spread x2, same median": Behaviour(latency_sigma=0.8),
    # Beta(0.8, 2) has Beta(2, 5)'s mean (2/7) and twice its spread: the mean does not move
    "prediction spread, same mean": Behaviour(pred_a=0.8, pred_b=2.0),
}
SPARSE = ("sparse errors vs error-free stable", Behaviour(error=0.005), Behaviour(error=0.0))


def _draw(rng: np.random.Generator, b: Behaviour, n: int, subwindows: int) -> dict[str, np.ndarray]:
    errors = rng.random(n) < b.error
    lat_s = rng.lognormal(math.log(b.latency_median_ms / 1000.0), b.latency_sigma, n)
    bucket = np.searchsorted(np.asarray(LATENCY_BUCKETS_S), lat_s, side="left")
    preds = rng.beta(b.pred_a, b.pred_b, n)
    sub = rng.integers(0, subwindows, n)
    return {
        "errors": errors,
        "lat_ms": BOUNDS_MS[bucket],
        "raw_lat_ms": lat_s * 1000,
        "preds": preds,
        "sub": sub,
    }


class Arm:
    """Cumulative data of one version over a step, in both judges' shapes."""

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.lat: list[np.ndarray] = []
        self.preds: list[np.ndarray] = []
        self.sub_err: list[float] = []
        self.sub_lat: list[float] = []
        self.sub_pred: list[float] = []

    def add(self, d: dict[str, np.ndarray], subwindows: int) -> None:
        self.requests += d["errors"].size
        self.errors += int(d["errors"].sum())
        ok = ~d["errors"]
        self.lat.append(d["lat_ms"])
        self.preds.append(d["preds"][ok])
        for w in range(subwindows):
            m = d["sub"] == w
            if m.any():
                self.sub_err.append(float(d["errors"][m].mean()))
                self.sub_lat.append(float(d["raw_lat_ms"][m].mean()))
                okm = m & ok
                if okm.any():
                    self.sub_pred.append(float(d["preds"][okm].mean()))

    def data(self) -> ArmData:
        return ArmData(
            requests=self.requests,
            errors=self.errors,
            latencies_ms=np.concatenate(self.lat) if self.lat else np.empty(0),
            predictions=np.concatenate(self.preds).tolist() if self.preds else [],
        )


def kayenta_fails(canary: Arm, stable: Arm) -> bool:
    """NetflixACAJudge-style: MW + 98 % HL interval per metric, scored; < 75 fails."""
    passed = 0
    metrics = [
        (canary.sub_err, stable.sub_err),
        (canary.sub_lat, stable.sub_lat),
        (canary.sub_pred, stable.sub_pred),
    ]
    for c, s in metrics:
        x, y = np.asarray(c), np.asarray(s)
        if x.size < 2 or y.size < 2 or np.unique(np.concatenate([x, y])).size == 1:
            passed += 1
            continue
        diffs = np.subtract.outer(x, y).ravel()
        mn = diffs.size
        z = float(sps.norm.isf(0.01))
        k = math.floor(mn / 2 - z * math.sqrt(mn * (x.size + y.size + 1) / 12))
        lo = float(np.partition(diffs, k - 1)[k - 1]) if k >= 1 else -math.inf
        mean_s = float(y.mean())
        ratio = float(x.mean()) / mean_s if mean_s > 0 else (math.inf if x.mean() > 0 else 1.0)
        high = lo > 0 and ratio >= 1.1
        passed += not high
    return 100.0 * passed / len(metrics) < 75.0


@dataclass
class Outcome:
    ours_failed_at: int | None  # analysis interval (1-based, whole rollout) of the rollback
    kayenta_failed_at: int | None


def policy_with_interval(interval_s: float) -> Policy:
    data = DEFAULT_POLICY.model_dump(mode="json")
    data["canary"]["interval_s"] = interval_s
    return Policy.model_validate(data)


def total_intervals(policy: Policy) -> int:
    return sum(s.max_looks(policy.canary.interval_s) for s in policy.canary.steps)


def simulate(args: tuple[int, Behaviour, Behaviour, float]) -> Outcome:
    seed, canary_b, stable_b, interval_s = args
    rng = np.random.default_rng(seed)
    policy = policy_with_interval(interval_s)
    max_intervals = total_intervals(policy)
    interval = policy.canary.interval_s
    subwindows = int(interval / SUBWINDOW_S)
    ours: int | None = None
    kayenta: int | None = None
    t = 0
    for index, step in enumerate(policy.canary.steps):
        c, s = Arm(), Arm()
        looks, elapsed = 0, 0.0
        while True:
            t += 1
            elapsed += interval
            n = rng.poisson(RATE_RPS * interval)
            n_c = int(rng.binomial(n, step.weight_pct / 100))
            c.add(_draw(rng, canary_b, n_c, subwindows), subwindows)
            s.add(_draw(rng, stable_b, n - n_c, subwindows), subwindows)
            if ours is None:
                verdicts = judge_arms(c.data(), s.data(), policy, index, looks + 1)
                outcome = (
                    "fail"
                    if any(v.outcome == "fail" for v in verdicts)
                    else ("extend" if any(v.outcome == "extend" for v in verdicts) else "pass")
                )
                if outcome == "fail":
                    ours = t
                elif outcome != "extend":
                    looks += 1
            if kayenta is None and kayenta_fails(c, s):
                kayenta = t
            if ours is not None and kayenta is not None:
                return Outcome(ours, kayenta)
            if t >= max_intervals:
                return Outcome(ours, kayenta)
            if elapsed >= step.min_duration_s:
                break
    return Outcome(ours, kayenta)


def run_scenario(
    name: str,
    canary_b: Behaviour,
    stable_b: Behaviour,
    rollouts: int,
    interval_s: float,
    pool: ProcessPoolExecutor,
) -> tuple[str, list[Outcome]]:
    base = zlib.crc32(name.encode())
    jobs = [(base + 1000 * i, canary_b, stable_b, interval_s) for i in range(rollouts)]
    return name, list(pool.map(simulate, jobs, chunksize=4))


def rate(outcomes: list[Outcome], who: str, within: int | None = None) -> float:
    hits = 0
    for o in outcomes:
        at = o.ours_failed_at if who == "ours" else o.kayenta_failed_at
        hits += at is not None and (within is None or at <= within)
    return hits / len(outcomes)


# -- rollback speed ---------------------------------------------------------------------------


def rollback_speed(trials: int) -> list[float]:
    from shipyard.clock import SYSTEM_CLOCK
    from shipyard.deploy import traffic
    from shipyard.deploy.canary import ServingAnalyzer
    from shipyard.deploy.engine import Engine, SmokeResult
    from shipyard.deploy.policy import parse_policy, set_policy
    from shipyard.deploy.rollout import ROLLED_BACK, start_rollout
    from shipyard.deploy.routing import choose_version
    from shipyard.store import Store
    from shipyard.store.serving import ServingWindow

    policy_text = """
approvals: {start: {count: 0}}
staging: {smoke: false}
canary:
  interval_s: 1
  steps: [{weight_pct: 10, min_duration_s: 30, min_samples: 50}]
analysis: {metrics: [{name: error_rate}]}
"""
    deltas: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        for trial in range(trials):
            model = f"m{trial}"
            set_policy(store, model, policy_text, actor="bench")
            with store.session() as s:
                traffic.put_in_production(
                    s, model, 1, now=time.time(), via="initial", actor="bench", reason=""
                )
            engine = Engine(
                store,
                SYSTEM_CLOCK,
                smoke=lambda m, v, p: SmokeResult(True, {}),
                analyzer=ServingAnalyzer(store),
            )
            rid = start_rollout(store, model, 2, actor="bench", policy=parse_policy(policy_text)).id
            engine.advance(rid)  # staging → canary 10 %
            served: list[tuple[float, int]] = []
            stop = threading.Event()

            def replica(seed: int) -> None:
                rnd = random.Random(seed)
                split = traffic.live_splits(store)[model]  # noqa: B023
                last_refresh = time.monotonic()
                while not stop.is_set():  # noqa: B023
                    if time.monotonic() - last_refresh >= 0.5:
                        split = traffic.live_splits(store)[model]  # noqa: B023
                        last_refresh = time.monotonic()
                    v = choose_version(f"request:{rnd.random()}", split.weights, split.canary)
                    served.append((time.time(), v))  # noqa: B023
                    time.sleep(1 / 25)

            threads = [threading.Thread(target=replica, args=(trial * 10 + i,)) for i in range(2)]
            for th in threads:
                th.start()
            time.sleep(1.0 + random.random() * 0.5)
            now = time.time()
            with store.session() as s:
                for version, req, err in ((2, 100, 10), (1, 900, 9)):
                    s.add(
                        ServingWindow(
                            model=model,
                            version=version,
                            worker="w",
                            window_start=now - 1,
                            window_end=now,
                            requests=req,
                            errors=err,
                            latency_s={},
                        )
                    )
            while True:
                step = engine.advance(rid)
                if step is not None and step.action == ROLLED_BACK:
                    verdict_at = time.time()
                    break
                time.sleep(0.05)
            time.sleep(2.5)
            stop.set()
            for th in threads:
                th.join()
            last_canary = max((ts for ts, v in served if v == 2), default=verdict_at)
            deltas.append(max(0.0, last_canary - verdict_at))
        store.dispose()
    return deltas


def production_rollback_on_a_real_server(trials: int) -> list[float]:
    """`shipyard rollback` against the real model server (Uvicorn on 127.0.0.1): seconds from
    the committed rollback to the first answer from the previous version, and no answer from
    the rolled-back version after it."""
    import httpx
    import uvicorn
    from sklearn.linear_model import LogisticRegression

    from shipyard.deploy.loop import advance_rollouts, sync_aliases
    from shipyard.deploy.policy import set_policy
    from shipyard.deploy.rollback import rollback
    from shipyard.deploy.rollout import start_rollout
    from shipyard.registry import Registry
    from shipyard.serving.server import build_app
    from shipyard.workspace import Workspace

    rng = np.random.default_rng(0)
    xs = rng.normal(size=(300, 2))
    ys = (xs[:, 0] > 0).astype(int)
    out: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(home=Path(tmp) / "home")
        reg = Registry(ws.store, ws.artifacts, actor="bench")
        import pandas as pd

        frame = pd.DataFrame(xs, columns=["a", "b"])
        for _ in range(2):
            reg.register("churn", LogisticRegression().fit(frame, ys), training_data=frame)
        set_policy(
            ws.store,
            "churn",
            "approvals: {start: {count: 0}}\ncanary: {steps: []}\n",
            actor="bench",
        )
        for v in (1, 2):
            start_rollout(ws.store, "churn", v, actor="bench")
            advance_rollouts(ws)
        app = build_app(ws, monitoring=False, refresh_interval_s=0.5)
        with socket_port() as port:
            pass
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        body = {
            "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": xs[:1].tolist()}]
        }
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
            current = 2
            for _ in range(trials):
                time.sleep(0.3 + rng.random() * 0.5)
                target = 1 if current == 2 else 2
                rollback(ws.store, "churn", actor="bench", to_version=target)
                sync_aliases(ws)
                t0 = time.monotonic()
                last_old = t0
                while time.monotonic() - t0 < 2.5:
                    got = int(
                        c.post("/v2/models/churn/infer", json=body).headers[
                            "x-shipyard-model-version"
                        ]
                    )
                    if got == current:
                        last_old = time.monotonic()
                    time.sleep(0.005)
                out.append(last_old - t0)
                current = target
        server.should_exit = True
        thread.join(timeout=10)
        ws.store.dispose()
    return out


def canary_rollback_on_a_real_server(trials: int) -> list[float]:
    """The control loop rolls back a failing canary that a real model server (Uvicorn on
    127.0.0.1, refresh 0.5 s) serves to 10 % of users: seconds from the committed verdict to
    the last answer any canary user got from the canary."""
    import httpx
    import pandas as pd
    import uvicorn
    from sklearn.linear_model import LogisticRegression

    from shipyard.clock import SYSTEM_CLOCK
    from shipyard.deploy import traffic
    from shipyard.deploy.canary import ServingAnalyzer
    from shipyard.deploy.engine import Engine, SmokeResult
    from shipyard.deploy.policy import parse_policy, set_policy
    from shipyard.deploy.rollout import ROLLED_BACK, start_rollout
    from shipyard.deploy.routing import choose_version
    from shipyard.registry import Registry
    from shipyard.serving.server import build_app
    from shipyard.store.serving import ServingWindow
    from shipyard.workspace import Workspace

    policy_text = """
approvals: {start: {count: 0}}
staging: {smoke: false}
canary:
  interval_s: 1
  steps: [{weight_pct: 10, min_duration_s: 30, min_samples: 50}]
analysis: {metrics: [{name: error_rate}]}
"""
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(300, 2))
    frame = pd.DataFrame(xs, columns=["a", "b"])
    ys = (xs[:, 0] > 0).astype(int)
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": xs[:1].tolist()}]}
    users = [f"u{i}" for i in range(300)]
    canary_users = [u for u in users if choose_version(f"user:{u}", {1: 90.0, 2: 10.0}, 2) == 2][
        :10
    ]
    out: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(home=Path(tmp) / "home")
        reg = Registry(ws.store, ws.artifacts, actor="bench")
        app = build_app(ws, monitoring=False, refresh_interval_s=0.5)
        with socket_port() as port:
            pass
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:

            def served(model: str, user: str) -> int:
                r = c.post(f"/v2/models/{model}/infer", json=body, headers={"x-user-id": user})
                return int(r.headers.get("x-shipyard-model-version", "0"))

            for trial in range(trials):
                model = f"m{trial}"
                for _ in range(2):
                    reg.register(model, LogisticRegression().fit(frame, ys), training_data=frame)
                set_policy(ws.store, model, policy_text, actor="bench")
                with ws.store.session() as s:
                    traffic.put_in_production(
                        s, model, 1, now=time.time(), via="initial", actor="bench", reason=""
                    )
                engine = Engine(
                    ws.store,
                    SYSTEM_CLOCK,
                    smoke=lambda m, v, p: SmokeResult(True, {}),
                    analyzer=ServingAnalyzer(ws.store),
                )
                policy = parse_policy(policy_text)
                rid = start_rollout(ws.store, model, 2, actor="bench", policy=policy).id
                engine.advance(rid)  # staging → canary 10 %
                deadline = time.monotonic() + 5
                while served(model, canary_users[0]) != 2 and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(rng.random() * 0.5)  # the verdict lands anywhere in a refresh period
                now = time.time()
                with ws.store.session() as s:
                    for version, req, err in ((2, 100, 10), (1, 900, 9)):
                        s.add(
                            ServingWindow(
                                model=model,
                                version=version,
                                worker="bench",
                                window_start=now - 1,
                                window_end=now,
                                requests=req,
                                errors=err,
                                latency_s={},
                            )
                        )
                while True:
                    step = engine.advance(rid)
                    if step is not None and step.action == ROLLED_BACK:
                        verdict_at = time.monotonic()
                        break
                    time.sleep(0.05)
                last_canary = verdict_at
                i = 0
                while time.monotonic() - verdict_at < 2.5:
                    if served(model, canary_users[i % len(canary_users)]) == 2:
                        last_canary = time.monotonic()
                    i += 1
                    time.sleep(0.005)
                out.append(last_canary - verdict_at)
        server.should_exit = True
        thread.join(timeout=10)
        ws.store.dispose()
    return out


@contextmanager
def socket_port() -> Iterator[int]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rollouts", type=int, default=200)
    parser.add_argument("--rollback-trials", type=int, default=10)
    parser.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_POLICY.canary.interval_s,
        help="analysis interval in seconds (default: the default policy's)",
    )
    args = parser.parse_args()
    policy = policy_with_interval(args.interval)
    t0 = time.perf_counter()
    results: dict[str, list[Outcome]] = {}
    with ProcessPoolExecutor(max_workers=2) as pool:
        for name, beh in SCENARIOS.items():
            results[name] = run_scenario(name, beh, STABLE, args.rollouts, args.interval, pool)[1]
        results[SPARSE[0]] = run_scenario(
            SPARSE[0], SPARSE[1], SPARSE[2], args.rollouts, args.interval, pool
        )[1]
    sim_s = time.perf_counter() - t0

    print(
        f"\nCanary judging on simulated traces: {args.rollouts} rollouts per scenario, "
        f"{RATE_RPS:g} req/s, steps {[s.weight_pct for s in policy.canary.steps]} %, "
        f"analysis every {args.interval:g} s, {total_intervals(policy)} intervals per rollout, "
        f"α = {policy.analysis.alpha:g} per rollout ({sim_s:.0f} s to simulate)\n"
    )
    header = f"{'scenario':36} {'measure':34} {'Shipyard':>9} {'Kayenta-style':>14} {'goal':>10}"
    print(header)
    print("-" * len(header))
    rows = [
        ("A/A (same model)", "false rollbacks, whole rollout", None, "≤ 1 %"),
        ("+2 pp errors", "detected within 3 intervals", 3, "≥ 95 %"),
        ("+2 pp errors", "detected in the rollout", None, ""),
        ("prediction shift only", "detected within 3 intervals", 3, ""),
        ("prediction shift only", "detected in the rollout", None, "detected"),
        ("latency spread x2, same median", "detected in the rollout", None, ""),
        ("prediction spread, same mean", "detected within 3 intervals", 3, ""),
        (SPARSE[0], "detected in the rollout", None, ""),
    ]
    for name, measure, within, goal in rows:
        o = results[name]
        print(
            f"{name:36} {measure:34} {rate(o, 'ours', within):>8.1%} "
            f"{rate(o, 'kayenta', within):>14.1%} {goal:>10}"
        )

    deltas = rollback_speed(args.rollback_trials)
    print(
        f"\nRollback speed ({args.rollback_trials} trials, 2 replicas × 25 req/s, "
        "split refresh 0.5 s):"
    )
    print(
        f"  failing verdict → last request served by the canary: median {np.median(deltas):.2f} s, "
        f"max {max(deltas):.2f} s (goal ≤ 2 s)"
    )
    served = canary_rollback_on_a_real_server(args.rollback_trials)
    print(
        f"\nCanary rollback on a real model server ({len(served)} trials, Uvicorn on 127.0.0.1, "
        "refresh 0.5 s, canary at 10 % of users):"
    )
    print(
        f"  failing verdict → last answer from the canary: median {np.median(served):.2f} s, "
        f"max {max(served):.2f} s (goal ≤ 2 s)"
    )
    moved = production_rollback_on_a_real_server(args.rollback_trials)
    print(
        f"\nOne-command production rollback on a real model server ({len(moved)} trials, "
        "Uvicorn on 127.0.0.1, refresh 0.5 s):"
    )
    print(
        f"  committed rollback → last answer from the old version: median "
        f"{np.median(moved):.2f} s, max {max(moved):.2f} s (goal ≤ 2 s)"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
