"""What the dashboard's tests share: a control plane seeded with something on every page.

:func:`seed` puts, through the services where they are quick and as rows where a real run would
take minutes: pipelines ``ingest`` (data) and ``train`` (training) with runs (one failed, one
running, each step with a log), model ``churn`` with version 1 in production and version 2's
canary failed and rolled back by canary analysis (verdicts and a diagnosis), model ``digits``
with a rollout by bob waiting for approval, alerts firing, pending and resolved, a silence, a
shared pool with a holder and waiters, a day of drift scores for six features, latency
quantiles per version and pool usage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from apikit import Plane
from deploy_testkit import TEST_POLICY, classifier, training_frame, write_window
from sklearn.linear_model import LogisticRegression

from shipyard.alerting.matchers import parse_matchers
from shipyard.alerting.silences import create_silence
from shipyard.checks import Check
from shipyard.deploy.loop import advance_rollouts
from shipyard.deploy.policy import set_policy
from shipyard.deploy.rollout import approve, get_rollout, start_rollout
from shipyard.monitoring.findings import add_checks
from shipyard.quota.admission import LeaseManager, LeaseRequest
from shipyard.quota.pools import apply_pools, read_pool_file
from shipyard.registry import Registry
from shipyard.statuses import CheckStatus, RolloutState
from shipyard.store.alerting import AlertRecord
from shipyard.store.tables import MetricPoint, PipelineRecord, Run, StepRun

POOLS = """
pools:
  - name: team
    capacity: {cpu: 8, memory: 32Gi}
    members:
      - {pipeline: ingest, share: 0.5, cap: 0.9}
      - {pipeline: train, share: 0.25}
"""
FEATURES = ("age", "income", "tenure", "plan", "region", "clicks")
HOUR_S = 3600.0


@dataclass
class Seeded:
    plane: Plane
    waiting_rollout: str
    failed_rollout: str
    failed_run: str
    running_run: str
    alert: str


def _runs(plane: Plane, logs: Path) -> tuple[str, str]:
    now = plane.clock.time()
    ids = {}
    with plane.ws.store.session() as s:
        for name, kind in (("ingest", "data"), ("train", "training")):
            s.add(PipelineRecord(name=name, kind=kind, file=f"{name}.py", spec={}, updated_at=now))
        for i in range(12):
            pipeline = ("ingest", "train")[i % 2]
            status = "failed" if i == 9 else "running" if i == 11 else "succeeded"
            created = now - (12 - i) * 1800.0
            run = Run(
                pipeline=pipeline, kind="data" if pipeline == "ingest" else "training",
                file=f"{pipeline}.py", status=status, params={"i": i}, created_by="olga",
                created_at=created, started_at=created,
                ended_at=None if status == "running" else created + 600 + 30 * i,
                exit_reason="step fit: exit code 1" if status == "failed" else None,
            )  # fmt: skip
            s.add(run)
            s.flush()
            ids[status] = run.id
            for n, step in enumerate(("load", "fit", "evaluate")):
                log = logs / f"{run.id}-{step}.log"
                lines = [
                    {"ts": created + n * 200 + k, "level": "info", "msg": f"{step} line {k}"}
                    for k in range(5)
                ]
                log.write_text("".join(json.dumps(x) + "\n" for x in lines))
                step_status = status if n == 1 or status == "succeeded" else "succeeded"
                if status == "running" and n == 2:
                    step_status = "pending"
                s.add(
                    StepRun(
                        run_id=run.id, step=step, status=step_status,
                        started_at=created + n * 200,
                        ended_at=None if step_status in ("running", "pending")
                        else created + n * 200 + 190,
                        exit_code=1 if step_status == "failed" else 0,
                        peak_rss_bytes=2**28 * (n + 1), cpu_seconds=120.0 * (n + 1),
                        resources={"cpu": 2, "memory": 2**30}, log_path=str(log),
                    )
                )  # fmt: skip
    return ids["failed"], ids["running"]


def _models(plane: Plane) -> tuple[str, str]:
    ws, clock = plane.ws, plane.clock
    rng = np.random.default_rng(3)
    x, _ = training_frame()
    carol = Registry(ws.store, ws.artifacts, clock, "carol")
    dave = Registry(ws.store, ws.artifacts, clock, "dave")
    carol.register("churn", classifier(), training_data=x)
    dave.register("churn", classifier(0.5), training_data=x)
    set_policy(ws.store, "churn", TEST_POLICY, actor="setup", clock=clock)
    first = start_rollout(ws.store, "churn", 1, actor="carol", author="carol", clock=clock)
    approve(ws.store, first.id, actor="alice", clock=clock)
    advance_rollouts(ws, clock)
    second = start_rollout(ws.store, "churn", 2, actor="dave", author="dave", clock=clock).id
    approve(ws.store, second, actor="bob", clock=clock)
    clock.advance(1)
    advance_rollouts(ws, clock)
    for _ in range(3):  # the canary errs 8 times as often: analysis rolls it back
        start = clock.time()
        clock.advance(60)
        for version, requests, error in ((2, 300, 0.08), (1, 2700, 0.01)):
            write_window(
                ws.store, "churn", version, start, clock.time(), requests=requests,
                error_rate=error, rng=rng,
            )  # fmt: skip
        advance_rollouts(ws, clock)
        if get_rollout(ws.store, second).state == RolloutState.ROLLED_BACK:
            break
    assert get_rollout(ws.store, second).state == RolloutState.ROLLED_BACK

    frame = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60)})
    bob = Registry(ws.store, ws.artifacts, clock, "bob")
    bob.register(
        "digits", LogisticRegression().fit(frame, (frame["a"] > 0).astype(int)), training_data=frame
    )
    set_policy(ws.store, "digits", "approvals: {start: {count: 1}}\n", actor="setup", clock=clock)
    waiting = start_rollout(ws.store, "digits", 1, actor="bob", author="bob", clock=clock).id
    return waiting, second


def _alerts(plane: Plane) -> str:
    now = plane.clock.time()
    rows = []
    for i, (rule, state, labels) in enumerate(
        (
            ("CanaryFailed", "firing", {"model": "churn", "severity": "page"}),
            ("DriftDetected", "firing", {"pipeline": "ingest", "column": "income"}),
            ("QuotaUsageHigh", "pending", {"pool": "team", "resource": "cpu"}),
            ("TrainingFailed", "resolved", {"pipeline": "train"}),
        )
    ):
        at = now - 3000 + i * 300
        rows.append(
            AlertRecord(
                fingerprint=f"{i:04x}" + "a1b2c3d4e5f60718"[4:],
                rule=f"{rule}/ticket", labels={"alertname": rule, **labels},
                annotations={"summary": f"{rule}: {', '.join(labels.values())}"},
                state=state, value=1.0 + i, active_at=at,
                fired_at=at + 60 if state != "pending" else None, last_true_at=now - 30,
                resolved_at=at + 900 if state == "resolved" else None,
            )
        )  # fmt: skip
    with plane.ws.store.session() as s:
        s.add_all(rows)
        create_silence(
            s, parse_matchers(['pipeline="train"']), starts_at=now - 600, ends_at=now + 3600,
            created_by="olga", comment="retraining this week", now=now - 600,
        )  # fmt: skip
    return rows[0].fingerprint


def _monitoring(plane: Plane) -> None:
    now = plane.clock.time()
    rng = np.random.default_rng(7)
    points = []
    for feature in FEATURES:
        labels = {"pipeline": "ingest", "dataset": "events", "column": feature}
        for h in range(48):
            drift = max(0.0, rng.normal(0.05, 0.03)) + (0.4 * h / 48 if feature == "income" else 0)
            points.append(
                MetricPoint.of("shipyard_drift_score", labels, now - (48 - h) * HOUR_S, drift)
            )
    for version, base in ((1, 0.020), (2, 0.035)):
        for q in ("0.5", "0.95", "0.99"):
            labels = {"model": "churn", "version": str(version), "quantile": q}
            scale = {"0.5": 1.0, "0.95": 2.2, "0.99": 3.5}[q]
            for h in range(24):
                value = base * scale * (1 + 0.1 * rng.normal())
                points.append(
                    MetricPoint.of("shipyard_serving_request_duration_seconds", labels,
                                   now - (24 - h) * HOUR_S, value)
                )  # fmt: skip
        for h in range(24):
            points.append(
                MetricPoint.of("shipyard_serving_error_share", {"model": "churn",
                               "version": str(version)}, now - (24 - h) * HOUR_S,
                               0.01 * version * (1 + 0.2 * rng.normal()))
            )  # fmt: skip
    for resource, cap in (("cpu", 8.0), ("memory", 32 * 2.0**30)):
        for h in range(24):
            used = cap * min(0.95, 0.3 + 0.6 * h / 24)
            points.append(
                MetricPoint.of("shipyard_quota_pool_reserved", {"pool": "team",
                               "resource": resource}, now - (24 - h) * HOUR_S, used)
            )  # fmt: skip
    with plane.ws.store.session() as s:
        s.add_all(points)
        checks = [
            Check.of_pipeline(
                "feature_drift", "ingest", CheckStatus.ALERT, "income drifted (PSI 0.42)",
                dataset="events", evidence={"columns": {"income": {"effect": 0.42}}},
            ),
            Check.of_pipeline("training_failures", "train", CheckStatus.ALERT, "1 of 6 failed"),
            Check.of_model("latency", "churn", 2, CheckStatus.WARNING, "p99 120 ms"),
        ]  # fmt: skip
        add_checks(s, checks, now - 120)


def _quota(plane: Plane, folder: Path) -> None:
    path = folder / "pools.yaml"
    path.write_text(POOLS)
    apply_pools(plane.ws.store, read_pool_file(path, 0.5), plane.clock, actor="setup")
    leases = LeaseManager(plane.ws.store, clock=plane.clock, lease_ttl_s=3600)
    leases.acquire(LeaseRequest("ingest", {"cpu": 6, "memory": "8Gi"}, pool="team"))
    for i in range(2):
        leases.submit(LeaseRequest("train", {"cpu": 4}, pool="team", step=f"fit{i}"))
    leases.close()


def seed(plane: Plane, folder: Path) -> Seeded:
    failed_run, running_run = _runs(plane, folder)
    waiting, failed = _models(plane)
    fingerprint = _alerts(plane)
    _monitoring(plane)
    _quota(plane, folder)
    _graphs_lineage_traffic(plane)
    _monitor_evidence(plane)
    return Seeded(plane, waiting, failed, failed_run, running_run, fingerprint)


TRAINING_DATA = "e" * 64


def _graphs_lineage_traffic(plane: Plane) -> None:
    """Both pipelines declare ``load → fit → evaluate`` (``evaluate`` also reads ``load``);
    churn v2 was trained by the newest succeeded ``train`` run on the artifact
    ``TRAINING_DATA`` that its ``load`` step read; a day of the serving request counters of
    churn v1 (100 requests a minute) and v2 (10 a minute, its canary's last hours)."""
    from sqlalchemy import select, update

    from shipyard.store.registry import ModelVersion
    from shipyard.store.tables import ArtifactRecord, Lineage

    now = plane.clock.time()
    spec = {"steps": {"load": {"upstream": []}, "fit": {"upstream": ["load"]},
                      "evaluate": {"upstream": ["fit", "load"]}}}  # fmt: skip
    with plane.ws.store.session() as s:
        s.execute(update(PipelineRecord).values(spec=spec))
        run = s.scalars(
            select(Run).where(Run.pipeline == "train", Run.status == "succeeded")
            .order_by(Run.created_at.desc()).limit(1)
        ).one()  # fmt: skip
        load = s.scalars(select(StepRun).where(StepRun.run_id == run.id, StepRun.step == "load"))
        s.add(ArtifactRecord(digest=TRAINING_DATA, uri=f"file:///{TRAINING_DATA}",
                             size_bytes=3 * 2**20, media_type="application/parquet",
                             meta={}, created_at=now))  # fmt: skip
        s.flush()
        s.add(Lineage(digest=TRAINING_DATA, step_run_id=load.one().id, direction="consumed",
                      name="events.parquet"))  # fmt: skip
        v2 = s.scalars(
            select(ModelVersion).where(ModelVersion.model == "churn", ModelVersion.version == 2)
        ).one()
        v2.run_id = run.id
        v2.lineage = {**v2.lineage, "run_id": run.id, "data": [TRAINING_DATA]}
        v2.tags = {"pipeline": "train", "step": "fit"}
        for version, per_min, hours in ((1, 100.0, 24), (2, 10.0, 6)):
            labels = {"model": "churn", "version": str(version)}
            s.add_all(  # a point every 5 minutes, as flushes would leave them
                MetricPoint.of("shipyard_serving_requests_total", labels,
                               now - hours * HOUR_S + k * 300, per_min * 5 * k)
                for k in range(hours * 12)
            )  # fmt: skip


def _monitor_evidence(plane: Plane) -> None:
    """What the Monitors pages draw beyond drift scores, from the real monitors on real data:
    a feature drift and a data-type problems verdict of ``ingest/events`` (``income`` shifted,
    ``plan`` with nulls), a training time verdict of ``train``, and for ``churn`` v1 input skew,
    prediction drift and accuracy measured on late labels next to its CBPE estimate."""
    from shipyard.monitoring.config import resolve_monitors
    from shipyard.monitoring.data import data_problems, feature_drift
    from shipyard.stats import DatasetProfile, compare, infer_schema

    now = plane.clock.time()
    rng = np.random.default_rng(11)
    n = 2000
    plans = rng.choice(["basic", "pro", None], n, p=[0.5, 0.3, 0.2])
    reference = pd.DataFrame(
        {"income": rng.normal(50, 10, n), "tenure": rng.normal(5, 2, n),
         "plan": rng.choice(["basic", "pro"], n)}
    )  # fmt: skip
    current = pd.DataFrame(
        {"income": rng.normal(58, 10, n), "tenure": rng.normal(5, 2, n), "plan": plans}
    )
    spec = resolve_monitors("data")
    ref, cur = DatasetProfile.from_frame(reference), DatasetProfile.from_frame(current)
    checks = [
        feature_drift(spec.monitors["feature_drift"], "ingest", "events", ref, cur, None),
        data_problems(spec.monitors["data_problems"], "ingest", "events", current,
                      infer_schema(reference)),
        Check.of_pipeline(
            "training_time", "train", CheckStatus.ALERT, "run took 1500.0 s, 2.31× the p95",
            run_id=None, evidence={"duration_s": 1500.0, "history_runs": 5, "factor": 2.0,
                                   "history_p95_s": 650.0, "ratio": 2.31},
        ),
    ]  # fmt: skip
    served = compare(ref, cur).to_json()
    checks += [
        Check.of_model("serving.input_skew", "churn", 1, CheckStatus.ALERT,
                       "serving inputs of churn v1 against the training data: income", served),
        Check.of_model("serving.prediction_drift", "churn", 1, CheckStatus.OK,
                       "predictions are stable against the baseline"),
        Check.of_model("serving.estimated_quality", "churn", 1, CheckStatus.OK,
                       "estimated accuracy 0.910 from 500 rows"),
    ]  # fmt: skip
    points = []
    for h in range(24):
        ts = now - (24 - h) * HOUR_S
        labels = {"model": "churn", "version": "1"}
        points.append(MetricPoint.of("shipyard_model_estimated_accuracy", labels, ts, 0.91))
        points.append(MetricPoint.of("shipyard_prediction_drift_score", labels, ts, 0.02))
        points.append(MetricPoint.of("shipyard_drift_score", {**labels, "column": "income"}, ts,
                                     0.3 * h / 24))  # fmt: skip
        if h >= 12:  # the labels of the first half day arrived late
            points.append(MetricPoint.of("shipyard_model_accuracy", labels, ts - 12 * HOUR_S,
                                         0.9 - 0.002 * h))  # fmt: skip
    with plane.ws.store.session() as s:
        s.add_all(points)
        add_checks(s, checks, now - 60)
