"""What the deploy tests share: a policy, training data, serving windows written the way
the model server flushes them, and the rollouts most scenarios start from. (A uniquely named
module: ``from conftest import`` resolves to whichever tests/*/conftest.py was imported last.)"""

from __future__ import annotations

import bisect
import copy
import functools

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sqlalchemy import insert

from shipyard.clock import FakeClock
from shipyard.deploy.loop import advance_rollouts
from shipyard.deploy.rollout import approve, get_rollout, start_rollout
from shipyard.registry import Registry
from shipyard.serving.telemetry import LATENCY_BUCKETS_S
from shipyard.statuses import RolloutState
from shipyard.store import Store
from shipyard.store.serving import PredictionRecord, ServingWindow
from shipyard.workspace import Workspace

T0 = 1_700_000_000.0

TEST_POLICY = """
roles:
  approver: [alice, bob]
approvals:
  start: {count: 1, roles: [approver]}
  speedup: {count: 2, roles: [approver]}
staging: {smoke: true, sample_rows: 3, max_latency_ms: 5000}
canary:
  interval_s: 60
  steps:
    - {weight_pct: 10, min_duration_s: 120, min_samples: 100}
    - {weight_pct: 50, min_duration_s: 120, min_samples: 100}
analysis:
  alpha: 0.01
  on_no_data: extend
"""


def training_frame(seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    y = (x["a"] + 0.5 * x["b"] > 0).astype(int).to_numpy()
    return x, y


@functools.cache
def _fitted(c: float) -> LogisticRegression:
    x, y = training_frame()
    return LogisticRegression(C=c).fit(x, y)


def classifier(c: float = 1.0) -> LogisticRegression:
    """A logistic regression (``C=c``) fitted on ``training_frame()``: fitted once per ``c``
    (a fit takes ~0.15 s), each caller given a copy of its own."""
    return copy.deepcopy(_fitted(c))


def histogram(latencies_s: np.ndarray) -> dict[str, object]:
    counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
    for v in latencies_s:
        counts[bisect.bisect_left(LATENCY_BUCKETS_S, float(v))] += 1
    return {
        "buckets_s": list(LATENCY_BUCKETS_S),
        "counts": counts,
        "sum_s": float(np.sum(latencies_s)),
    }


def write_window(
    store: Store,
    model: str,
    version: int,
    start: float,
    end: float,
    *,
    requests: int,
    error_rate: float,
    rng: np.random.Generator,
    latency_median_s: float = 0.02,
    prediction_mean: float = 0.3,
    worker: str = "w1",
) -> None:
    """One flushed window, drawn the way a server would see it (binomial errors, lognormal
    latency, Bernoulli predictions)."""
    errors = int(rng.binomial(requests, error_rate))
    lat = rng.lognormal(np.log(latency_median_s), 0.4, requests)
    preds = rng.binomial(1, prediction_mean, requests - errors)
    with store.session() as s:
        s.add(
            ServingWindow(
                model=model,
                version=version,
                worker=worker,
                window_start=start,
                window_end=end,
                requests=requests,
                rows=requests,
                errors=errors,
                data_errors=0,
                latency_s=histogram(lat),
                summary={},
            )
        )
        ts = np.linspace(start, end, max(len(preds), 1), endpoint=False) + 1e-3
        if len(preds):
            s.execute(
                insert(PredictionRecord),
                [
                    {
                        "request_id": f"{worker}-{version}-{start}-{i}",
                        "model": model,
                        "version": version,
                        "ts": float(ts[i]),
                        "prediction": [int(p)],
                    }
                    for i, p in enumerate(preds)
                ],
            )


def _author(models: Registry, version: int) -> str:
    return models.get("churn", version).created_by


def put_v1_in_production(ws: Workspace, models: Registry, clock: FakeClock) -> str:
    r = start_rollout(ws.store, "churn", 1, actor="carol", author=_author(models, 1), clock=clock)
    approve(ws.store, r.id, actor="alice", clock=clock)
    advance_rollouts(ws, clock)
    assert get_rollout(ws.store, r.id).state == RolloutState.PRODUCTION
    return r.id


def start_v2_canary(ws: Workspace, models: Registry, clock: FakeClock) -> str:
    r = start_rollout(ws.store, "churn", 2, actor="dave", author=_author(models, 2), clock=clock)
    approve(ws.store, r.id, actor="bob", clock=clock)
    clock.advance(1)
    advance_rollouts(ws, clock)
    assert get_rollout(ws.store, r.id).state == RolloutState.CANARY
    return r.id


def serve_interval(
    ws: Workspace,
    clock: FakeClock,
    rng: np.random.Generator,
    *,
    canary_error: float = 0.01,
    canary_requests: int = 300,
    stable_requests: int = 2700,
) -> None:
    start = clock.time()
    clock.advance(60)
    write_window(
        ws.store,
        "churn",
        2,
        start,
        clock.time(),
        requests=canary_requests,
        error_rate=canary_error,
        rng=rng,
    )
    write_window(
        ws.store,
        "churn",
        1,
        start,
        clock.time(),
        requests=stable_requests,
        error_rate=0.01,
        rng=rng,
    )
