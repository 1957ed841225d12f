"""A workspace built the way the demo builds its own, through the wings' own functions (no
pipeline processes, no model server process: the same records, faster), on a fake clock.

What it holds, as the demo does: the demo's pools and policy, an alerting file like the demo's
(a log receiver, DatasetDrift and QuotaPoolFull rules), four pipelines (data, scoring batch,
training, validation) whose data sets were published to monitoring, a model trained on the
digits, registered with its lineage, validated by the policy's gate and deployed by a real
rollout (staging → production), served traffic (windows flushed by the serving telemetry), the
serving monitors' verdicts, and a drift alert that reached the log receiver.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split

from shipyard.alerting import deliver_due, evaluate, load_config
from shipyard.clock import FakeClock
from shipyard.deploy.gate import validate_version
from shipyard.deploy.loop import advance_rollouts
from shipyard.deploy.policy import set_policy
from shipyard.deploy.rollout import approve, get_rollout, start_rollout
from shipyard.monitoring.config import resolve_monitors
from shipyard.monitoring.evaluate import evaluate_monitors
from shipyard.monitoring.observation import publish
from shipyard.monitoring.serving import ServingMonitor
from shipyard.monitoring.settings import keep_settings
from shipyard.quota.pools import apply_pools, read_pool_file
from shipyard.registry import Registry
from shipyard.serving.telemetry import Telemetry
from shipyard.store.base import new_id
from shipyard.store.monitoring import MonitorProfile
from shipyard.store.tables import PipelineRecord, Run, StepRun
from shipyard.workspace import Workspace

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
T0 = 1_700_000_000.0
MODEL = "digits"

ALERTING = """
route: {receiver: demo-log, group_by: [alertname], group_wait: 0s, group_interval: 1s,
        repeat_interval: 1h}
receivers:
  - {name: demo-log, type: log, path: demo-alerts.log}
defaults:
  DataDrift: false
  ModelOutage: {for: 0s}
rules:
  - {name: DatasetDrift, kind: threshold, metric: shipyard_dataset_drift_share, op: ">",
     threshold: 0.2, lookback: 2m, severity: ticket}
  - {name: QuotaPoolFull, kind: threshold, metric: shipyard_quota_pool_reserved,
     matchers: ['pool="demo"', 'resource="cpu"'], op: ">=", threshold: 2, lookback: 6s,
     severity: ticket}
"""

PIPELINES = {
    # name: (kind, schedule, monitors)
    "digits-data": ("data", "0 2 * * *", None),
    "digits-batch": ("data", None, {"feature_drift": {"reference_pipeline": "digits-data"},
                                    "label_drift": {"reference_pipeline": "digits-data"},
                                    "data_problems": {"reference_pipeline": "digits-data"}}),
    "digits-training": ("training", "0 3 * * *", None),
    "digits-validation": ("validation", None,
                          {"test_set_drift": {"reference_pipeline": "digits-data"}}),
}  # fmt: skip


@dataclass(frozen=True)
class Built:
    home: Path
    now: float
    training_run: str


def _run(ws: Workspace, name: str, kind: str, schedule: str | None) -> str:
    now = ws.clock.time()
    run_id = new_id()
    with ws.store.session() as s:
        if s.get(PipelineRecord, name) is None:
            s.add(
                PipelineRecord(
                    name=name, kind=kind, file=f"examples/pipelines/{name}.py",
                    schedule=schedule, spec={"steps": {"main": {}}}, updated_at=now,
                )
            )  # fmt: skip
        s.add(
            Run(
                id=run_id, pipeline=name, kind=kind, file=f"examples/pipelines/{name}.py",
                status="succeeded", created_at=now, started_at=now, ended_at=now + 5,
                created_by="bob",
            )
        )  # fmt: skip
        s.flush()
        s.add(
            StepRun(
                run_id=run_id, step="main", status="succeeded", started_at=now,
                ended_at=now + 5, resources={"cpu": 1.0, "memory": 512 * 2**20},
                cpu_seconds=4.0, peak_rss_bytes=200 * 2**20,
            )
        )  # fmt: skip
    ws.clock.advance(10)  # type: ignore[attr-defined]
    return run_id


def build(home: Path) -> Built:
    """The demo-like workspace in ``home``."""
    clock = FakeClock(T0)
    home.mkdir(parents=True, exist_ok=True)
    (home / "alerting.yaml").write_text(ALERTING, encoding="utf-8")
    ws = Workspace.open(clock=clock, home=home)
    apply_pools(ws.store, read_pool_file(EXAMPLES / "pools.yaml", 0.5), clock)
    frame = load_digits(as_frame=True).frame
    train, test = train_test_split(frame, test_size=0.25, random_state=0, stratify=frame["target"])
    runs = {}
    for name, (kind, schedule, monitors) in PIPELINES.items():
        runs[name] = _run(ws, name, kind, schedule)
        with ws.store.session() as s:
            keep_settings(s, name, resolve_monitors(kind, monitors), clock.time())

    def publish_as(name: str, frame: pd.DataFrame, role: str) -> None:
        kind, _, monitors = PIPELINES[name]
        publish(
            ws.store, ws.artifacts, clock, resolve_monitors(kind, monitors), name, "digits",
            frame, role=role, label="target", run_id=runs[name],
        )  # fmt: skip

    publish_as("digits-data", train, "reference")
    publish_as("digits-data", test, "current")
    publish_as("digits-validation", test, "current")
    evaluate_monitors(ws.store, clock)  # the training run: time and failures judged

    x_train, y_train = train.drop(columns="target"), train["target"]
    x_test, y_test = test.drop(columns="target"), test["target"]
    fitted = RandomForestClassifier(20, random_state=0).fit(x_train, y_train)  # no BLAS: quick
    with ws.store.session() as s:
        digests = [s.query(MonitorProfile.profile_digest).limit(1).scalar()]
    registry = Registry(ws.store, ws.artifacts, clock, "bob")
    registry.register(
        MODEL, fitted, training_data=x_train, metrics={"accuracy": fitted.score(x_test, y_test)},
        run_id=runs["digits-training"], data_digests=digests,
    )  # fmt: skip
    set_policy(ws.store, MODEL, (EXAMPLES / "policy.yaml").read_text(), actor="bob", clock=clock)
    validate_version(registry, MODEL, 1, x_test, y_test, clock=clock)
    rollout = start_rollout(ws.store, MODEL, 1, actor="bob", author="bob", clock=clock)
    approve(ws.store, rollout.id, actor="alice", clock=clock)
    for _ in range(10):
        advance_rollouts(ws, clock)
        clock.advance(5)
        if get_rollout(ws.store, rollout.id).state == "production":
            break

    info, predictor = registry.load(MODEL, version=1)  # production decides by the split
    telemetry = Telemetry(ws.store, ws.artifacts, clock=clock, sample_rate=0.25)
    rows = x_test.to_numpy(dtype=np.float64)
    for i in range(0, 200, 2):
        x = rows[i : i + 2]
        telemetry.ok(info, x, np.asarray(predictor.predict(x)), None, 0.004, f"req-{i}")
        clock.advance(0.5)
    telemetry.flush()
    ServingMonitor(ws.store, Registry.of(ws), clock).run(MODEL)

    # the scoring batch drifts (central ink, as the demo's shifted batch): the alert reaches the log
    ink = x_test[[f"pixel_{r}_{c}" for r in range(2, 6) for c in range(2, 6)]].mean(axis=1)
    publish_as("digits-batch", test[ink >= ink.quantile(0.7)], "current")
    config = load_config(home)
    for _ in range(3):
        evaluate(ws.store, config, clock.time())
        deliver_due(ws.store, config.receivers, clock)
        clock.advance(1)
    clock.advance(300)  # the drift points leave the rule's lookback: the alert resolves
    evaluate(ws.store, config, clock.time())
    deliver_due(ws.store, config.receivers, clock)
    ws.store.dispose()
    return Built(home, clock.time(), runs["digits-training"])


def copy_of(built: Built, home: Path) -> Workspace:
    """A workspace of its own on a copy of the built one, its fake clock where the build ended."""
    shutil.copytree(built.home, home)
    return Workspace.open(clock=FakeClock(built.now), home=home)
