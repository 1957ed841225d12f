"""The serving monitors together: the distribution checks (input skew, prediction drift,
data-type problems, latency) here, quality and operations from their modules; every check
recorded as a Finding and metric points in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from shipyard.checks import Check
from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.errors import NotFound
from shipyard.monitoring.data import drift_score
from shipyard.monitoring.findings import add_checks
from shipyard.monitoring.serving.base import ServingMonitorConfig, log
from shipyard.monitoring.serving.operations import OperationsChecks
from shipyard.monitoring.serving.quality import QualityChecks
from shipyard.monitoring.serving.sampled import SampledInputChecks
from shipyard.registry import PREDICTION_COLUMN, Registry, VersionInfo
from shipyard.stats import DatasetProfile, compare
from shipyard.stats.performance import histogram_quantile
from shipyard.statuses import CheckStatus

if TYPE_CHECKING:
    from shipyard.store import Store


class ServingMonitor(QualityChecks, SampledInputChecks, OperationsChecks):
    """Runs the serving monitors for the live version of a model and records what they find."""

    def input_skew(self, info: VersionInfo) -> Check:
        name = "serving.input_skew"
        if not info.reference_profile:
            return Check.of_model(
                name, info.model, info.version, CheckStatus.OK, "no reference profile registered"
            )
        windows = self._windows(info.model, info.version, self._since())
        current, skipped = self._merged([w.input_profile for w in windows])
        if current is None or current.rows < self.config.min_rows:
            rows = 0 if current is None else current.rows
            return Check.of_model(
                name, info.model, info.version, CheckStatus.OK, f"not enough data ({rows} rows)"
            )
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
        status = (
            CheckStatus.ALERT
            if report.drifted
            else CheckStatus.WARNING
            if drifted
            else CheckStatus.OK
        )
        summary = (
            f"serving inputs of {info.model} v{info.version} against the training data: "
            f"{report.drifted_summary()}"
        )
        evidence = {**report.to_json(), "rows": current.rows, "windows_skipped": skipped}
        return Check.of_model(name, info.model, info.version, status, summary, evidence, metrics)

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
            return Check.of_model(
                name, info.model, info.version, CheckStatus.OK, "not enough data for a baseline"
            )
        report = compare(baseline, current, self.config.drift)
        col = report.columns[0]
        metrics = [
            (
                "shipyard_prediction_drift_score",
                {"model": info.model, "version": str(info.version)},
                float(col.effect),
            )
        ]
        status = CheckStatus.ALERT if col.drifted else CheckStatus.OK
        summary = (
            f"predictions of {info.model} v{info.version} drifted from its first windows "
            f"({col.effect_name} {col.effect:.3g}, p={col.p_value:.3g})"
            if col.drifted
            else "predictions are stable against the baseline"
        )
        return Check.of_model(
            name, info.model, info.version, status, summary, report.to_json(), metrics
        )

    def data_type_problems(self, info: VersionInfo) -> Check:
        windows = self._windows(info.model, info.version, self._since())
        requests = sum(w.requests for w in windows)
        bad = sum(w.data_errors for w in windows)
        share = bad / requests if requests else 0.0
        labels = {"model": info.model, "version": str(info.version)}
        status = (
            CheckStatus.ALERT
            if requests and share > self.config.max_data_error_share
            else CheckStatus.OK
        )
        summary = f"{bad} of {requests} requests had bad input ({share:.1%})"
        return Check.of_model(
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
            return Check.of_model(
                "serving.latency", info.model, info.version, CheckStatus.OK, "no traffic"
            )
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
        status = CheckStatus.ALERT if p99 > self.config.p99_budget_s else CheckStatus.OK
        summary = (
            f"p50 {1000 * (quantiles[0.5] or 0):.2f} ms, p99 {1000 * p99:.2f} ms "
            f"(budget {1000 * self.config.p99_budget_s:.0f} ms)"
        )
        evidence = {
            "quantiles_s": {str(q): v for q, v in quantiles.items()},
            "requests": sum(counts),
        }
        return Check.of_model(
            "serving.latency", info.model, info.version, status, summary, evidence, metrics
        )

    def checks(
        self, model: str, url: str | Sequence[str] | None = None, *, expect_server: bool = False
    ) -> list[Check]:
        try:
            info = self.registry.get(model)
        except NotFound:
            return [self.outage(model, url, expect_server=expect_server)]
        joint = self.multivariate_drift(info)
        return [
            self.input_skew(info),
            *([joint] if joint is not None else []),
            self.prediction_drift(info),
            self.data_type_problems(info),
            self.latency(info),
            self.quality(info),
            self.estimated_quality(info),
            self.estimated_loss(info),
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
        with self.store.session() as s:
            add_checks(s, checks, self.clock.time())


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
