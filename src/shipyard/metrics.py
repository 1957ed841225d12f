"""The metric catalogue: every metric name Shipyard writes or exposes, with its one owner.

Two kinds of series reach a Prometheus that scrapes Shipyard:

- **store series** (``where="store"``): :class:`~shipyard.store.tables.MetricPoint` rows that
  monitors, quota, serving's window flushes and deploy write; alert rules read them, and the
  daemon's ``/metrics`` exposes each one's newest point
  (:mod:`shipyard.alerting.exposition`) with the type and help given here;
- **worker instruments** (``where="worker"``): prometheus-client counters and histograms that
  each model server worker updates per request and exposes on its own ``/metrics``
  (:mod:`shipyard.serving.telemetry`).

A name has one meaning everywhere: the worker's per-request HTTP metrics are
``shipyard_http_*``; the store's per-version serving series, summed over every worker and
replica from the flushed windows, are ``shipyard_serving_*``. So one Prometheus scraping a model
server and the daemon sees no family twice (``tests/test_metrics_promtool.py``), and
``tests/test_metric_catalogue.py`` fails when code uses a name that is not listed here, when two
places define one name, or when an instrument's type or labels differ from its entry.

``labels`` lists every label a writer may attach; a family's series carry a subset (the drift
score of a pipeline's data set has ``pipeline, dataset, column``; of a model's serving inputs,
``model, version, column``). Counter names end in ``_total`` as exposed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricType = Literal["counter", "gauge", "histogram", "summary"]
Where = Literal["store", "worker"]
Owner = Literal["monitoring", "quota", "serving", "deploy", "alerting"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric family: its name as exposed, type, labels, owning wing and help text."""

    name: str
    type: MetricType
    labels: tuple[str, ...]
    owner: Owner
    where: Where
    help: str

    @property
    def samples(self) -> tuple[str, ...]:
        """The sample names the family puts on ``/metrics`` (prometheus-client's text format)."""
        base = self.name.removesuffix("_total") if self.type == "counter" else self.name
        suffixes = {
            "counter": ("_total", "_created"),
            "gauge": ("",),
            "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum", "_created"),
        }[self.type]
        return tuple(base + s for s in suffixes)


def _m(
    name: str, type: MetricType, labels: str, owner: Owner, help: str, where: Where = "store"
) -> MetricSpec:
    return MetricSpec(name, type, tuple(labels.split()), owner, where, help)


_MODEL = "model version"
_QUALITY = ("accuracy", "f1", "auc", "mae", "rmse")
_ESTIMATED = ("accuracy", "f1")  # CBPE's expected_* (shipyard.stats.cbpe)

# -- worker instruments: per request, on each model server's /metrics ---------------------------
HTTP_REQUESTS = _m(
    "shipyard_http_requests_total", "counter", "model version code", "serving",
    "Inference requests this model server answered, by model, version and HTTP status code "
    "(all workers of the server under --workers N).",
    where="worker",
)  # fmt: skip
HTTP_REQUEST_ERRORS = _m(
    "shipyard_http_request_errors_total", "counter", "model version kind", "serving",
    "Inference requests this model server failed, by kind: data (bad input, HTTP 4xx) or "
    "model (the model raised, HTTP 5xx).",
    where="worker",
)  # fmt: skip
HTTP_REQUEST_DURATION = _m(
    "shipyard_http_request_duration_seconds", "histogram", "model version", "serving",
    "Time from a parsed inference request to its encoded answer on this model server.",
    where="worker",
)  # fmt: skip
SHADOW_COPIES = _m(
    "shipyard_http_shadow_copies_total", "counter", "model version outcome", "serving",
    "Copies of answered requests this model server sent to a shadow version (version), by "
    "outcome: answered, failed (the shadow raised) or dropped (the channel to the shadow "
    "helper was full, or the helper could not load the shadow version).",
    where="worker",
)  # fmt: skip

CATALOGUE_LIST: tuple[MetricSpec, ...] = (
    HTTP_REQUESTS,
    HTTP_REQUEST_ERRORS,
    HTTP_REQUEST_DURATION,
    SHADOW_COPIES,
    # -- serving: the flushed windows' cumulative counts per model version (all workers) --------
    _m("shipyard_serving_requests_total", "counter", _MODEL, "serving",
       "Inference requests answered for a model version by every server (any status), "
       "added up from the flushed windows."),
    _m("shipyard_serving_errors_total", "counter", _MODEL, "serving",
       "Inference requests of a model version that the server failed (HTTP 5xx: the model "
       "raised), from the flushed windows."),
    _m("shipyard_serving_data_errors_total", "counter", _MODEL, "serving",
       "Inference requests of a model version refused for bad input (HTTP 4xx: missing, "
       "corrupted or wrongly typed values), from the flushed windows."),
    # -- monitoring: data, validation and training monitors -------------------------------------
    _m("shipyard_drift_score", "gauge", "pipeline dataset model version column", "monitoring",
       "Drift effect size of a column against its reference (0 unless the column drifted): "
       "data and validation sets by pipeline and dataset, serving inputs by model and version."),
    _m("shipyard_dataset_drift_share", "gauge", "pipeline dataset", "monitoring",
       "Share of a data set's feature columns that drifted against the reference."),
    _m("shipyard_data_problem_fraction", "gauge", "pipeline dataset column", "monitoring",
       "Share of a column's rows with a data-type problem (missing, corrupted, wrong type)."),
    _m("shipyard_run_failed", "gauge", "kind pipeline", "monitoring",
       "1 when the pipeline's last run failed, 0 when it succeeded."),
    _m("shipyard_training_duration_ratio", "gauge", "pipeline", "monitoring",
       "Duration of the last training run over the p95 of similar past runs."),
    _m("shipyard_run_elapsed_ratio", "gauge", "kind pipeline run", "monitoring",
       "Time a running run has run over the p95 of its pipeline's past runs; 0 once it ended."),
    _m("shipyard_run_stalled", "gauge", "kind pipeline run", "monitoring",
       "1 while a running run's step writes nothing (or its runner is silent), else 0."),
    _m("shipyard_reconstruction_error", "gauge", "pipeline dataset", "monitoring",
       "Mean PCA reconstruction error of a data set against its reference's fit."),
    _m("shipyard_multivariate_drift", "gauge", "pipeline dataset method", "monitoring",
       "1 when a multivariate method flags the data set's joint distribution, else 0."),
    _m("shipyard_estimated_loss", "gauge", "pipeline dataset metric", "monitoring",
       "A regressor's MAE or RMSE on a batch estimated before labels (DLE)."),
    _m("shipyard_estimated_loss_ratio", "gauge", "pipeline dataset metric", "monitoring",
       "Estimated loss of a batch over the reference's realised loss."),
    _m("shipyard_realised_loss", "gauge", "pipeline dataset metric", "monitoring",
       "A regressor's MAE or RMSE on a batch whose labels arrived."),
    # -- monitoring: serving monitors (daemon task monitors.serving) ---------------------------
    _m("shipyard_prediction_drift_score", "gauge", _MODEL, "monitoring",
       "Drift effect size of a model version's predictions against its first windows."),
    _m("shipyard_serving_data_error_share", "gauge", _MODEL, "monitoring",
       "Share of a model version's requests over the monitors' period refused for bad input."),
    _m("shipyard_serving_error_share", "gauge", _MODEL, "monitoring",
       "Share of a model version's requests over the monitors' period that failed (5xx)."),
    _m("shipyard_serving_request_duration_seconds", "summary", "model version quantile",
       "monitoring",
       "Latency quantiles (0.5, 0.95, 0.99) of a model version over the monitors' period of "
       "flushed windows, every server merged."),
    _m("shipyard_serving_probe_up", "gauge", "model", "monitoring",
       "1 when a running model server answers ready for the model, else 0."),
    _m("shipyard_serving_recent_requests", "gauge", "model", "monitoring",
       "Requests to the model over the outage check's lookback, written while traffic is "
       "expected."),
    _m("shipyard_serving_quota_used_fraction", "gauge", "model pool resource", "monitoring",
       "Measured use over the grant of the quota leases that the model's servers hold, the "
       "highest of its servers."),
    _m("shipyard_model_quality_drop", "gauge", "model version metric source", "monitoring",
       "How much worse than registered a model version's quality metric is (positive = worse), "
       "measured on late labels or estimated."),
    *(
        _m(f"shipyard_model_{k}", "gauge", _MODEL, "monitoring",
           f"{k} of a model version measured on late labels joined to its predictions.")
        for k in _QUALITY
    ),
    *(
        _m(f"shipyard_model_estimated_{k}", "gauge", _MODEL, "monitoring",
           f"{k} of a model version estimated from its confidences (CBPE) before labels arrive.")
        for k in _ESTIMATED
    ),
    _m("shipyard_serving_estimated_loss", "gauge", "model version metric", "monitoring",
       "A served regressor's MAE or RMSE over the monitors' period estimated before labels "
       "(DLE on the request log's rows)."),
    _m("shipyard_serving_estimated_loss_ratio", "gauge", "model version metric", "monitoring",
       "A served regressor's estimated loss over its reference's realised loss."),
    _m("shipyard_serving_reconstruction_error", "gauge", _MODEL, "monitoring",
       "Mean PCA reconstruction error of a model version's logged inputs against its reference."),
    _m("shipyard_serving_multivariate_drift", "gauge", "model version method", "monitoring",
       "1 when a multivariate method flags a model version's logged inputs, else 0."),
    # -- quota: record_usage, every daemon tick -------------------------------------------------
    _m("shipyard_quota_capacity", "gauge", "pool resource", "quota",
       "What the pool holds of a resource."),
    _m("shipyard_quota_reserved", "gauge", "pool resource pipeline", "quota",
       "What a pipeline's held leases reserve of a pool's resource."),
    _m("shipyard_quota_used", "gauge", "pool resource pipeline", "quota",
       "What a pipeline's steps measured using of a pool's resource (heartbeats)."),
    _m("shipyard_quota_waiting", "gauge", "pool pipeline", "quota",
       "A pipeline's lease requests waiting in a pool's queue."),
    _m("shipyard_quota_pool_reserved", "gauge", "pool resource", "quota",
       "What all held leases reserve of a pool's resource."),
    _m("shipyard_quota_usage_rate", "gauge", "pool resource", "quota",
       "Least-squares slope of the pool's reservation over the window, units per second."),
    _m("shipyard_quota_time_to_exhaustion_seconds", "gauge", "pool resource", "quota",
       "Seconds until the pool's resource is fully reserved at the current rate (while rising)."),
    _m("shipyard_quota_used_fraction", "gauge", "pool resource", "quota",
       "Share of a pool's resource reserved (read by QuotaUsageHigh and QuotaExhaustionSoon)."),
    _m("shipyard_quota_hog_wait_seconds", "gauge", "pool pipeline holds waiting", "quota",
       "How long others' requests have waited while the pipeline holds more than its share of "
       "a shared pool (0: it does not); read by QuotaHog."),
    # -- deploy and alerting --------------------------------------------------------------------
    _m("shipyard_rollout_failed", "gauge", "model version rollout", "deploy",
       "1 when canary analysis failed a rollout of the model version."),
    _m("ALERTS", "gauge", "alertname alertstate", "alerting",
       "Alerts that are pending or firing (1 per alert, with its labels), as Prometheus names "
       "them."),
)  # fmt: skip

CATALOGUE: dict[str, MetricSpec] = {spec.name: spec for spec in CATALOGUE_LIST}

DYNAMIC_PREFIXES = ("shipyard_model_", "shipyard_model_estimated_")
"""Prefixes that code completes at run time (``f"shipyard_model_{metric}"``); every completion
is an entry above."""


def spec(name: str) -> MetricSpec | None:
    """The catalogue's entry for ``name``; None for a series a user wrote under a name of their
    own."""
    return CATALOGUE.get(name)
