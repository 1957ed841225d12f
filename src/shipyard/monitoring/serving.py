"""The monitors of a model in service (DESIGN.md's table, "serving" and "every model in service").

Each check reads the windows that the model server flushed (``serving_windows``), the logged
predictions and late labels, and returns a :class:`Check`; :meth:`ServingMonitor.run` writes
every check as a ``Finding`` and its numbers as ``MetricPoint`` rows, in one transaction.

- **input skew**: serving inputs against the training data's reference profile.
- **prediction drift**: predictions of recent windows against the version's first windows.
- **data-type problems**: the share of requests refused for bad input.
- **latency**: p50/p95/p99 from the merged latency histograms.
- **quality** from late labels joined to logged predictions by request id: accuracy, F1 and AUC
  (classifiers) or MAE and RMSE (regressors).
- **estimated quality** before labels arrive: confidence-based performance estimation (CBPE).
- **outage**: a synthetic probe of the server(s) and the absence of traffic that was expected.
- **quota**: what each live server of the model uses of the quota lease it holds.

The quality checks also write ``shipyard_model_quality_drop{model,version,metric,source}``:
the registered metric minus the measured (``source="labels"``) or estimated
(``source="estimated"``) one, so that a positive value is always worse (measured minus
registered for the lower-is-better ``mae`` and ``rmse``) — the series ``ModelQualityDrop`` reads.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
from sqlalchemy import func, select

from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.errors import InvalidInput, NotFound
from shipyard.monitoring.data import drift_score
from shipyard.registry import PREDICTION_COLUMN, Registry, VersionInfo
from shipyard.stats import DatasetProfile, DriftConfig, compare
from shipyard.stats.performance import cbpe, expected_calibration_error, histogram_quantile
from shipyard.store.serving import FeedbackRecord, PredictionRecord, ServingWindow
from shipyard.store.tables import Finding, MetricPoint, labels_key

if TYPE_CHECKING:
    from shipyard.store import Store

log = logging.getLogger("shipyard.monitoring")

OK, WARNING, ALERT, ERROR = "ok", "warning", "alert", "error"
LOWER_IS_BETTER = ("mae", "rmse")
QUALITY_DROP = "shipyard_model_quality_drop"
QUOTA_USED_FRACTION = "shipyard_serving_quota_used_fraction"


@dataclass
class Check:
    """One monitor's verdict on one model version, with its evidence and metric points."""

    monitor: str
    model: str
    version: int | None
    status: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    metrics: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


@dataclass(frozen=True)
class ServingMonitorConfig:
    period_s: float = 300.0
    """How far back "recent" reaches."""
    baseline_windows: int = 5
    """How many of a version's first windows form the baseline for prediction drift."""
    max_data_error_share: float = 0.01
    p99_budget_s: float = 0.1
    min_rows: int = 30
    """Fewer rows than this and a statistical check answers "not enough data" (status ok)."""
    quality_tolerance: float = 0.05
    """An alert when a quality metric falls this far below the one registered with the model."""
    max_calibration_error: float = 0.1
    probe_timeout_s: float = 2.0
    traffic_history_s: float = 86400.0
    """Requests in this span before the recent period make traffic *expected* now."""
    max_quota_fraction: float = 0.9
    """A warning when a server uses more than this share of a resource its lease grants."""
    drift: DriftConfig = field(default_factory=DriftConfig)


def quality_drop(metric: str, registered: float, measured: float) -> float:
    """How much worse ``measured`` is than ``registered``: positive = worse, for any metric."""
    if metric in LOWER_IS_BETTER:
        return measured - registered
    return registered - measured


def _drop_metrics(
    info: VersionInfo, values: dict[str, float], source: str
) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for metric, value in values.items():
        registered = info.metrics.get(metric)
        if isinstance(registered, int | float) and not isinstance(registered, bool):
            labels = {
                "model": info.model,
                "version": str(info.version),
                "metric": metric,
                "source": source,
            }
            out.append((QUALITY_DROP, labels, quality_drop(metric, float(registered), value)))
    return out


class ServingMonitor:
    """Runs the serving monitors for the live version of a model and records what they find."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        clock: Clock = SYSTEM_CLOCK,
        config: ServingMonitorConfig | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.config = config or ServingMonitorConfig()

    # -- reading -------------------------------------------------------------------------------
    def _windows(self, model: str, version: int | None, since: float) -> list[ServingWindow]:
        with self.store.session() as s:
            q = select(ServingWindow).where(
                ServingWindow.model == model, ServingWindow.window_end >= since
            )
            if version is not None:
                q = q.where(ServingWindow.version == version)
            return list(s.scalars(q.order_by(ServingWindow.window_end)))

    def _first_windows(self, model: str, version: int, n: int) -> list[ServingWindow]:
        with self.store.session() as s:
            q = (
                select(ServingWindow)
                .where(ServingWindow.model == model, ServingWindow.version == version)
                .order_by(ServingWindow.window_start)
                .limit(n)
            )
            return list(s.scalars(q))

    @staticmethod
    def _merged(profiles: list[dict[str, Any] | None]) -> tuple[DatasetProfile | None, int]:
        merged, skipped = None, 0
        for p in profiles:
            if not p:
                continue
            try:
                prof = DatasetProfile.from_json(p)
                merged = prof if merged is None else merged.merge(prof)
            except InvalidInput:
                skipped += 1  # binned on other edges (a version without a reference profile)
        return merged, skipped

    def _since(self) -> float:
        return self.clock.time() - self.config.period_s

    # -- the checks ----------------------------------------------------------------------------
    def input_skew(self, info: VersionInfo) -> Check:
        name = "serving.input_skew"
        if not info.reference_profile:
            return Check(name, info.model, info.version, OK, "no reference profile registered")
        windows = self._windows(info.model, info.version, self._since())
        current, skipped = self._merged([w.input_profile for w in windows])
        if current is None or current.rows < self.config.min_rows:
            rows = 0 if current is None else current.rows
            return Check(name, info.model, info.version, OK, f"not enough data ({rows} rows)")
        ref = DatasetProfile.from_json(info.reference_profile)
        ref = DatasetProfile(
            {k: v for k, v in ref.columns.items() if k != PREDICTION_COLUMN}, ref.rows
        )
        report = compare(ref, current, self.config.drift)
        metrics = [
            (
                "shipyard_drift_score",
                {"model": info.model, "version": str(info.version), "column": c.column},
                drift_score(c),  # the same series as the data monitors': 0 unless it drifted
            )
            for c in report.columns
        ]
        drifted = report.drifted_columns
        status = ALERT if report.drifted else WARNING if drifted else OK
        summary = (
            f"serving inputs of {info.model} v{info.version} drifted from the training data in "
            f"{drifted}"
            if drifted
            else "serving inputs match the training data"
        )
        evidence = {**report.to_json(), "rows": current.rows, "windows_skipped": skipped}
        return Check(name, info.model, info.version, status, summary, evidence, metrics)

    def prediction_drift(self, info: VersionInfo) -> Check:
        name = "serving.prediction_drift"
        base_rows = self._first_windows(info.model, info.version, self.config.baseline_windows)
        base_ids = {w.id for w in base_rows}
        recent = [
            w
            for w in self._windows(info.model, info.version, self._since())
            if w.id not in base_ids
        ]
        baseline, _ = self._merged([w.prediction_profile for w in base_rows])
        current, _ = self._merged([w.prediction_profile for w in recent])
        if (
            baseline is None
            or current is None
            or min(baseline.rows, current.rows) < self.config.min_rows
        ):
            return Check(name, info.model, info.version, OK, "not enough data for a baseline")
        report = compare(baseline, current, self.config.drift)
        col = report.columns[0]
        metrics = [
            (
                "shipyard_prediction_drift_score",
                {"model": info.model, "version": str(info.version)},
                float(col.effect),
            )
        ]
        status = ALERT if col.drifted else OK
        summary = (
            f"predictions of {info.model} v{info.version} drifted from its first windows "
            f"({col.effect_name} {col.effect:.3g}, p={col.p_value:.3g})"
            if col.drifted
            else "predictions are stable against the baseline"
        )
        return Check(name, info.model, info.version, status, summary, report.to_json(), metrics)

    def data_type_problems(self, info: VersionInfo) -> Check:
        windows = self._windows(info.model, info.version, self._since())
        requests = sum(w.requests for w in windows)
        bad = sum(w.data_errors for w in windows)
        share = bad / requests if requests else 0.0
        labels = {"model": info.model, "version": str(info.version)}
        status = ALERT if requests and share > self.config.max_data_error_share else OK
        summary = f"{bad} of {requests} requests had bad input ({share:.1%})"
        return Check(
            "serving.data_type_problems",
            info.model,
            info.version,
            status,
            summary,
            {"requests": requests, "data_errors": bad, "share": share},
            [
                # Shares over the monitor's lookback; the cumulative *_total counters that the
                # error-budget rules read are the server's own (serving/counters.py).
                ("shipyard_serving_data_error_share", labels, share),
                (
                    "shipyard_serving_error_share",
                    labels,
                    float(sum(w.errors for w in windows)) / requests if requests else 0.0,
                ),
            ],
        )

    def latency(self, info: VersionInfo) -> Check:
        windows = self._windows(info.model, info.version, self._since())
        if not windows:
            return Check("serving.latency", info.model, info.version, OK, "no traffic")
        buckets = windows[0].latency_s["buckets_s"]
        counts = np.sum([w.latency_s["counts"] for w in windows], axis=0).tolist()
        quantiles = {q: histogram_quantile(q, buckets, counts) for q in (0.5, 0.95, 0.99)}
        labels = {"model": info.model, "version": str(info.version)}
        metrics = [
            ("shipyard_serving_request_duration_seconds", {**labels, "quantile": str(q)}, v)
            for q, v in quantiles.items()
            if v is not None
        ]
        p99 = quantiles[0.99] or 0.0
        status = ALERT if p99 > self.config.p99_budget_s else OK
        summary = (
            f"p50 {1000 * (quantiles[0.5] or 0):.2f} ms, p99 {1000 * p99:.2f} ms "
            f"(budget {1000 * self.config.p99_budget_s:.0f} ms)"
        )
        evidence = {
            "quantiles_s": {str(q): v for q, v in quantiles.items()},
            "requests": sum(counts),
        }
        return Check(
            "serving.latency", info.model, info.version, status, summary, evidence, metrics
        )

    def _joined(self, info: VersionInfo) -> list[tuple[list[Any], list[Any] | None, list[Any]]]:
        with self.store.session() as s:
            rows = s.execute(
                select(
                    PredictionRecord.prediction, PredictionRecord.confidence, FeedbackRecord.labels
                )
                .join(
                    FeedbackRecord,
                    (FeedbackRecord.model == PredictionRecord.model)
                    & (FeedbackRecord.request_id == PredictionRecord.request_id),
                )
                .where(
                    PredictionRecord.model == info.model,
                    PredictionRecord.version == info.version,
                    PredictionRecord.ts >= self._since(),
                )
            ).all()
        return [(list(p), c, list(y)) for p, c, y in rows]

    def quality(self, info: VersionInfo) -> Check:
        """Quality from late labels joined to the logged predictions by request id."""
        from sklearn import metrics as skm

        name = "serving.quality"
        pairs = self._joined(info)
        y_pred: list[Any] = []
        y_true: list[Any] = []
        scored: list[tuple[Any, float]] = []  # probabilities are logged for a sample of requests
        for pred, conf, labels in pairs:
            if len(pred) != len(labels):
                continue  # a label list that does not match the request's rows
            y_pred += pred
            y_true += labels
            if conf is not None and len(conf) == len(pred) and all(len(c) == 2 for c in conf):
                scored += [(y, c[1]) for y, c in zip(labels, conf, strict=True)]
        if len(y_true) < self.config.min_rows:
            return Check(name, info.model, info.version, OK, f"{len(y_true)} labelled rows so far")
        series = {"model": info.model, "version": str(info.version)}
        classification = all(
            isinstance(v, str | bool) or float(v).is_integer() for v in y_pred + y_true
        )
        values: dict[str, float] = {}
        if classification:
            yt, yp = np.asarray(y_true), np.asarray(y_pred)
            values["accuracy"] = float(skm.accuracy_score(yt, yp))
            average = "binary" if len(set(y_true) | set(y_pred)) <= 2 else "macro"
            pos = max(set(y_true) | set(y_pred)) if average == "binary" else 1
            values["f1"] = float(
                skm.f1_score(yt, yp, average=average, pos_label=pos, zero_division=0)
            )
            if len(scored) >= self.config.min_rows and len({y for y, _ in scored}) == 2:
                values["auc"] = float(
                    skm.roc_auc_score([y for y, _ in scored], [p for _, p in scored])
                )
        else:
            yt, yp = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
            values["mae"] = float(np.mean(np.abs(yt - yp)))
            values["rmse"] = float(math.sqrt(np.mean((yt - yp) ** 2)))
        worse = [
            k
            for k, v in values.items()
            if k in info.metrics
            and k not in ("mae", "rmse")
            and v < float(info.metrics[k]) - self.config.quality_tolerance
        ]
        worse += [
            k
            for k, v in values.items()
            if k in info.metrics and k in ("mae", "rmse") and v > float(info.metrics[k]) * 1.2
        ]
        status = ALERT if worse else OK
        shown = ", ".join(f"{k} {v:.3f}" for k, v in values.items())
        summary = f"{len(y_true)} labelled rows: {shown}" + (
            f"; worse than registered: {worse}" if worse else ""
        )
        metrics = [(f"shipyard_model_{k}", series, v) for k, v in values.items()]
        metrics += _drop_metrics(info, values, "labels")
        evidence = {"rows": len(y_true), "metrics": values, "registered": info.metrics}
        return Check(name, info.model, info.version, status, summary, evidence, metrics)

    def estimated_quality(self, info: VersionInfo, classes: list[Any] | None = None) -> Check:
        """CBPE on the (sampled) predicted probabilities of the recent period."""
        name = "serving.estimated_quality"
        with self.store.session() as s:
            rows = s.execute(
                select(PredictionRecord.request_id, PredictionRecord.confidence).where(
                    PredictionRecord.model == info.model,
                    PredictionRecord.version == info.version,
                    PredictionRecord.ts >= self._since(),
                    PredictionRecord.confidence.is_not(None),
                )
            ).all()
        proba_rows = [r for _, conf in rows if conf for r in conf]
        if len(proba_rows) < self.config.min_rows:
            return Check(name, info.model, info.version, OK, "not enough probabilities logged")
        proba = np.asarray(proba_rows, dtype=float)
        k = proba.shape[1]
        estimate = cbpe(proba, classes or list(range(k)))
        evidence: dict[str, Any] = {
            "rows": len(proba),
            "estimate": estimate,
            "assumptions": "calibrated probabilities; no concept drift (P(y|x) unchanged)",
        }
        status = OK
        notes = []
        if k == 2:
            ece = self._calibration(info)
            if ece is not None:
                evidence["calibration_error"] = ece
                if ece > self.config.max_calibration_error:
                    status = WARNING
                    notes.append(
                        f"probabilities look miscalibrated (ECE {ece:.3f}); estimate unreliable"
                    )
        registered = info.metrics.get("accuracy")
        if registered is not None and estimate["expected_accuracy"] < float(registered) - (
            self.config.quality_tolerance
        ):
            status = ALERT
            notes.append(f"below the registered accuracy {float(registered):.3f}")
        labels = {"model": info.model, "version": str(info.version)}
        metrics = [(f"shipyard_model_estimated_{k2[9:]}", labels, v) for k2, v in estimate.items()]
        metrics += _drop_metrics(info, {k2[9:]: v for k2, v in estimate.items()}, "estimated")
        summary = f"estimated accuracy {estimate['expected_accuracy']:.3f} from {len(proba)} rows"
        if notes:
            summary += "; " + "; ".join(notes)
        return Check(name, info.model, info.version, status, summary, evidence, metrics)

    def _calibration(self, info: VersionInfo) -> float | None:
        p, y = [], []
        for _pred, conf, labels in self._joined(info):
            if conf is None or len(conf) != len(labels):
                continue
            for c, label in zip(conf, labels, strict=True):
                p.append(c[1])
                y.append(float(label))
        if len(p) < self.config.min_rows:
            return None
        return expected_calibration_error(np.asarray(p), np.asarray(y))

    def outage(
        self,
        model: str,
        url: str | Sequence[str] | None = None,
        expect_traffic: bool = True,
        *,
        expect_server: bool = False,
    ) -> Check:
        """A synthetic probe of the server(s) at ``url`` plus the absence of expected traffic.

        ``shipyard_serving_probe_up`` is 1 when any server answers ready for the model (a load
        balancer in front of them still gets answers), 0 when none does — and 0 when
        ``expect_server`` (the model is live) but no server is running to probe.
        ``shipyard_serving_recent_requests`` is written while traffic is expected (requests
        within ``traffic_history_s``), so that a model that never had traffic alerts nothing.
        """
        name = "serving.outage"
        evidence: dict[str, Any] = {}
        problems = []
        labels = {"model": model}
        metrics: list[tuple[str, dict[str, str], float]] = []
        urls = [url] if isinstance(url, str) else list(url or [])
        if urls:
            probes = []
            for u in urls:
                up, why, seconds = self._probe(u, model)
                probes.append({"url": u, "up": up, "detail": why, "seconds": seconds})
            answering = [p for p in probes if p["up"]]
            evidence["probe"] = (answering or probes)[0]
            evidence["probes"] = probes
            metrics.append(("shipyard_serving_probe_up", labels, 1.0 if answering else 0.0))
            if not answering:
                problems.append("probe failed: " + "; ".join(str(p["detail"]) for p in probes))
        elif expect_server:
            evidence["probe"] = {"up": False, "detail": "no running model server serves it"}
            metrics.append(("shipyard_serving_probe_up", labels, 0.0))
            problems.append("live, but no running model server serves it")
        now = self.clock.time()
        since = now - self.config.period_s
        recent_requests = self._requests(model, since, now)
        earlier = self._requests(model, now - self.config.traffic_history_s, since)
        evidence["traffic"] = {"recent": recent_requests, "earlier": earlier}
        if recent_requests or earlier:
            metrics.append(("shipyard_serving_recent_requests", labels, float(recent_requests)))
        if expect_traffic and recent_requests == 0 and earlier > 0:
            problems.append(
                f"no traffic in the last {self.config.period_s:.0f} s "
                f"after {earlier} requests before"
            )
        status = ALERT if problems else OK
        summary = "; ".join(problems) if problems else "answering"
        return Check(name, model, None, status, summary, evidence, metrics)

    def _requests(self, model: str, since: float, until: float) -> int:
        """Requests in the windows of ``model`` that ended in ``[since, until]``."""
        with self.store.session() as s:
            total = s.scalar(
                select(func.coalesce(func.sum(ServingWindow.requests), 0)).where(
                    ServingWindow.model == model,
                    ServingWindow.window_end >= since,
                    ServingWindow.window_end <= until,
                )
            )
        return int(total or 0)

    def quota(self, model: str) -> Check:
        """Each live server's measured use of the quota lease it holds, per resource.

        ``shipyard_serving_quota_used_fraction{model,pool,resource}`` = used / granted, the
        largest over the model's servers in that pool (the one closest to its grant)."""
        from shipyard.serving.instances import instance_leases

        name = "serving.quota"
        leases = [
            x for x in instance_leases(self.store, self.clock.time(), model) if x.status == "held"
        ]
        if not leases:
            return Check(name, model, None, OK, "no running server of it holds a quota lease")
        worst: dict[tuple[str, str], float] = {}
        servers = []
        for lease in leases:
            fractions = {
                r: lease.used[r] / granted
                for r, granted in lease.granted.items()
                if granted > 0 and r in lease.used
            }
            servers.append(
                {
                    "url": lease.instance.url,
                    "pool": lease.pool,
                    "lease": lease.instance.lease_id,
                    "granted": lease.granted,
                    "used": lease.used,
                    "fraction": fractions,
                }
            )
            for r, f in fractions.items():
                worst[(lease.pool, r)] = max(f, worst.get((lease.pool, r), 0.0))
        metrics = [
            (QUOTA_USED_FRACTION, {"model": model, "pool": pool, "resource": r}, f)
            for (pool, r), f in sorted(worst.items())
        ]
        high = {f"{pool}/{r}": f for (pool, r), f in worst.items() if f > self.max_fraction}
        status = ALERT if any(f > 1 for f in high.values()) else WARNING if high else OK
        shown = ", ".join(f"{r} {f:.0%}" for (_, r), f in sorted(worst.items()))
        summary = f"{len(leases)} server(s) use {shown or 'nothing measured yet'} of their lease"
        if high:
            summary += f"; above {self.max_fraction:.0%}: {sorted(high)}"
        return Check(name, model, None, status, summary, {"servers": servers}, metrics)

    @property
    def max_fraction(self) -> float:
        return self.config.max_quota_fraction

    def _probe(self, url: str, model: str) -> tuple[bool, str, float]:
        started = self.clock.monotonic()
        try:
            with httpx.Client(base_url=url, timeout=self.config.probe_timeout_s) as c:
                r = c.get(f"/v2/models/{model}/ready")
            elapsed = self.clock.monotonic() - started
            if r.status_code != 200:
                return False, f"HTTP {r.status_code}: {r.text[:200]}", elapsed
            return True, "ready", elapsed
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__}: {exc}", self.clock.monotonic() - started

    # -- running and recording -----------------------------------------------------------------
    def checks(
        self, model: str, url: str | Sequence[str] | None = None, *, expect_server: bool = False
    ) -> list[Check]:
        try:
            info = self.registry.get(model)
        except NotFound:
            return [self.outage(model, url, expect_server=expect_server)]
        return [
            self.input_skew(info),
            self.prediction_drift(info),
            self.data_type_problems(info),
            self.latency(info),
            self.quality(info),
            self.estimated_quality(info),
            self.outage(model, url, expect_server=expect_server),
            self.quota(model),
        ]

    def run(
        self, model: str, url: str | Sequence[str] | None = None, *, expect_server: bool = False
    ) -> list[Check]:
        """Every check for the model's live version, recorded in one transaction.

        ``url``: the server (or servers) to probe; ``expect_server``: the model is live, so
        no server to probe is an outage (the control loop's ``monitors.serving`` task)."""
        checks = self.checks(model, url, expect_server=expect_server)
        self.record(checks)
        return checks

    def record(self, checks: list[Check]) -> None:
        now = self.clock.time()
        with self.store.session() as s:
            for c in checks:
                subject = c.model if c.version is None else f"{c.model}/{c.version}"
                s.add(
                    Finding(
                        monitor=c.monitor,
                        subject=subject,
                        status=c.status,
                        summary=c.summary,
                        evidence=_jsonable(c.evidence),
                        labels={"model": c.model, "version": c.version},
                        ts=now,
                    )
                )
                for metric, labels, value in c.metrics:
                    s.add(
                        MetricPoint(
                            name=metric,
                            labels=labels,
                            labels_key=labels_key(labels),
                            ts=now,
                            value=float(value),
                        )
                    )


def monitor_live_models(
    store: Store,
    registry: Registry,
    clock: Clock = SYSTEM_CLOCK,
    config: ServingMonitorConfig | None = None,
) -> dict[str, list[Check]]:
    """Run the serving monitors of every live model, probing every running model server.

    Live: a default alias or a deploy traffic split (:func:`shipyard.serving.live_versions`).
    Every ``shipyard serve`` serves every live model, so each running server is probed for
    each; a live model with no running server is an outage (``probe_up`` 0). One model's
    failure is logged and does not stop the others.
    """
    from shipyard.serving.instances import live_instances, live_model_names

    monitor = ServingMonitor(store, registry, clock, config)
    urls = [i.url for i in live_instances(store, clock.time())]
    out: dict[str, list[Check]] = {}
    for model in live_model_names(store):
        try:
            out[model] = monitor.run(model, urls, expect_server=True)
        except Exception:
            log.exception("serving monitors of %s failed", model)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value
