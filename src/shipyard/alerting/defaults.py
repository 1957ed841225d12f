"""The default rule for every monitor of the mission's table.

Each rule selects series by name and groups by their labels (``pipeline``, ``model``,
``dataset``, ``column``…), so one rule covers every pipeline and deployment as soon as it writes
the series: a new pipeline or deployment gets its alerts without any step of its own.
Users change a default (``defaults: {DataDrift: {threshold: 0.3}}``) or switch it off
(``defaults: {ModelOutage: false}``) in ``alerting.yaml``.

Thresholds: PSI above 0.2 is the customary "significant shift" (Yurdakul, *Statistical
properties of population stability index*, 2018); burn rates are the SRE workbook's (ch. 5).

Which writer feeds which rule (the series must exist under exactly these names and labels;
each is a store series of the metric catalogue, :mod:`shipyard.metrics`, which
``tests/test_metric_catalogue.py`` checks every rule against):

- DataDrift: ``shipyard_drift_score`` — monitoring (data, validation and serving monitors);
- PredictionDrift: ``shipyard_prediction_drift_score`` — monitoring.serving;
- DataQuality: ``shipyard_data_problem_fraction`` — monitoring.data;
- QuotaUsageHigh, QuotaExhaustionSoon: ``shipyard_quota_used_fraction{pool,resource}`` — quota
  (``quota.usage.record_usage``: the leases' reservation ÷ capacity);
- QuotaHog: ``shipyard_quota_hog_wait_seconds{pool,pipeline,holds,waiting}`` — quota
  (``record_usage``: how long others have waited while the pipeline holds more than its share);
- TrainingFailed, TrainingSlow: ``shipyard_run_failed{kind,pipeline}``,
  ``shipyard_training_duration_ratio{pipeline}`` — monitoring.training when a run ends, and
  monitoring.progress while a training run runs (its elapsed time over the same p95), so
  TrainingSlow fires while a slow run still runs and resolves when it ends within the limit;
- RunSlow (any kind, as soon as a running run is past its history's p95), RunStalled:
  ``shipyard_run_elapsed_ratio{kind,pipeline,run}``, ``shipyard_run_stalled{kind,pipeline,run}``
  — monitoring.progress (daemon task ``monitors.progress``; 0 on both when the run ends, so
  they resolve);
- MultivariateDrift: ``shipyard_multivariate_drift{pipeline,dataset,method}`` —
  monitoring.multivariate;
- EstimatedLossHigh: ``shipyard_estimated_loss_ratio{pipeline,dataset,metric}`` (a regressor's
  estimated loss over the reference's) — monitoring.estimation;
- ServingEstimatedLossHigh, ServingMultivariateDrift:
  ``shipyard_serving_estimated_loss_ratio{model,version,metric}``,
  ``shipyard_serving_multivariate_drift{model,version,method}`` — monitoring.serving (DLE and
  the multivariate measures on the request log's rows against the version's reference rows);
- ModelQualityDrop: ``shipyard_model_quality_drop{model,version,metric,source}`` (registered
  minus measured or estimated, positive = worse) — monitoring.serving;
- ServingLatencyHigh, ModelOutage: ``shipyard_serving_request_duration_seconds{quantile}``,
  ``shipyard_serving_probe_up`` — monitoring.serving (run by the daemon's ``monitors.serving``
  for every live model; 0 also when a live model has no running server);
- ModelTrafficStopped: ``shipyard_serving_recent_requests{model}`` — monitoring.serving's outage
  check, written only while traffic is expected (the model had requests within a day);
- ServingQuotaHigh: ``shipyard_serving_quota_used_fraction{model,pool,resource}`` —
  monitoring.serving's quota check, from the leases that ``shipyard serve --pool`` holds;
- ErrorBudgetBurn, ServingBadInput: the cumulative ``shipyard_serving_requests_total``,
  ``…_errors_total`` and ``…_data_errors_total{model,version}`` — the model server's flushes
  (:mod:`shipyard.serving.counters`);
- CanaryFailed: ``shipyard_rollout_failed{model,version,rollout}`` — deploy's engine.
"""

from __future__ import annotations

from shipyard.alerting.matchers import Matcher
from shipyard.alerting.rules import PAGE_WINDOWS, TICKET_WINDOWS, BurnWindow, Rule

HOG_WAIT_S = 300.0
"""How long others' requests wait, while one pipeline holds more than its share of a shared
pool, before QuotaHog fires (borrowing idle capacity is allowed; keeping it from those who come
back for their share, for minutes, is what the rule names)."""
BAD_INPUT_SHARE = 0.05
"""Share of serving requests with bad input (HTTP 4xx from validation) that opens a ticket."""


def _notes(summary: str, description: str, runbook: str) -> dict[str, str]:
    return {
        "summary": summary,
        "description": description,
        "runbook_url": f"https://shipyard.dev/runbooks/{runbook}",
    }


def default_rules() -> list[Rule]:
    """One rule per monitor (serving, data, training, validation, every model in service)."""
    return [
        Rule(
            "DataDrift",
            "threshold",
            "shipyard_drift_score",
            threshold=0.2,
            lookback_s=86400,
            severity="ticket",
            annotations=_notes(
                "Drift in {{ $labels.pipeline }} {{ $labels.dataset }}.{{ $labels.column }}",
                "Drift score {{ $value }} (features, labels or test sets vs their reference).",
                "data-drift",
            ),
        ),
        Rule(
            "PredictionDrift",
            "threshold",
            "shipyard_prediction_drift_score",
            threshold=0.2,
            lookback_s=86400,
            severity="ticket",
            annotations=_notes(
                "Predictions of {{ $labels.model }} drifted",
                "Prediction drift score {{ $value }} against the training predictions.",
                "prediction-drift",
            ),
        ),
        Rule(
            "DataQuality",
            "threshold",
            "shipyard_data_problem_fraction",
            threshold=0.05,
            lookback_s=86400,
            severity="ticket",
            annotations=_notes(
                "Missing or corrupted values in {{ $labels.pipeline }}.{{ $labels.column }}",
                "{{ $value }} of the values are missing, of the wrong type or out of range.",
                "data-quality",
            ),
        ),
        Rule(
            "QuotaUsageHigh",
            "threshold",
            "shipyard_quota_used_fraction",
            threshold=0.9,
            for_s=600,
            lookback_s=600,
            severity="ticket",
            annotations=_notes(
                "Pool {{ $labels.pool }} {{ $labels.resource }} is {{ $value }} used",
                "Usage stayed above 90 % of the pool for 10 minutes.",
                "quota-usage",
            ),
        ),
        Rule(
            "QuotaExhaustionSoon",
            "forecast",
            "shipyard_quota_used_fraction",
            threshold=1.0,
            horizon_s=4 * 3600,
            lookback_s=3600,
            for_s=300,
            severity="page",
            annotations=_notes(
                "Pool {{ $labels.pool }} {{ $labels.resource }} runs out within 4 h",
                "At the last hour's rate the pool is exhausted in {{ $value }} s.",
                "quota-exhaustion",
            ),
        ),
        Rule(
            "QuotaHog",
            "threshold",
            "shipyard_quota_hog_wait_seconds",
            threshold=HOG_WAIT_S,
            lookback_s=600,
            severity="ticket",
            info_labels=("holds", "waiting"),
            annotations=_notes(
                "Pipeline {{ $labels.pipeline }} holds more than its share of pool "
                "{{ $labels.pool }} while others wait",
                "{{ $labels.pipeline }} holds {{ $labels.holds }}; waiting: "
                "{{ $labels.waiting }} (the longest for {{ $value }} s). Preemption "
                "(pool policy `preemption: borrowers`) or a lower cap gives the share back.",
                "quota-hog",
            ),
        ),
        Rule(
            "TrainingFailed",
            "threshold",
            "shipyard_run_failed",
            threshold=0,
            matchers=(Matcher("kind", "training"),),
            lookback_s=3600,
            severity="ticket",
            annotations=_notes(
                "Training pipeline {{ $labels.pipeline }} failed",
                "A training run ended badly; see `shipyard runs show`.",
                "training-failed",
            ),
        ),
        Rule(
            "TrainingSlow",
            "threshold",
            "shipyard_training_duration_ratio",
            threshold=2.0,
            lookback_s=86400,
            severity="ticket",
            annotations=_notes(
                "Training of {{ $labels.pipeline }} is at {{ $value }}× its usual time",
                "Duration of the last run, or of a run still running so far, over the p95 of "
                "the pipeline's past runs; a running run that ends within the limit resolves it.",
                "training-slow",
            ),
        ),
        Rule(
            "RunSlow",
            "threshold",
            "shipyard_run_elapsed_ratio",
            threshold=1.0,
            lookback_s=600,
            severity="ticket",
            annotations=_notes(
                "Run {{ $labels.run }} of {{ $labels.pipeline }} runs past its usual time",
                "Still running at {{ $value }}× the p95 of the pipeline's past runs.",
                "training-slow",
            ),
        ),
        Rule(
            "RunStalled",
            "threshold",
            "shipyard_run_stalled",
            threshold=0,
            lookback_s=600,
            severity="ticket",
            annotations=_notes(
                "Run {{ $labels.run }} of {{ $labels.pipeline }} looks stalled",
                "A running step wrote nothing to its log (or the runner stopped heartbeating) "
                "for longer than the pipeline's run_progress stall_s; see `shipyard runs logs`.",
                "run-stalled",
            ),
        ),
        Rule(
            "MultivariateDrift",
            "threshold",
            "shipyard_multivariate_drift",
            threshold=0,
            lookback_s=86400,
            severity="ticket",
            annotations=_notes(
                "Features of {{ $labels.pipeline }} {{ $labels.dataset }} move together "
                "differently",
                "{{ $labels.method }} flags a change in the joint distribution against the "
                "reference (a change no single column may show).",
                "multivariate-drift",
            ),
        ),
        Rule(
            "EstimatedLossHigh",
            "threshold",
            "shipyard_estimated_loss_ratio",
            threshold=1.2,
            lookback_s=86400,
            severity="ticket",
            annotations=_notes(
                "Estimated {{ $labels.metric }} of {{ $labels.pipeline }} {{ $labels.dataset }} "
                "is {{ $value }}× the reference's",
                "Direct loss estimation before labels arrive; the labels, once published, "
                "confirm or contradict it.",
                "estimated-loss",
            ),
        ),
        Rule(
            "ServingEstimatedLossHigh",
            "threshold",
            "shipyard_serving_estimated_loss_ratio",
            threshold=1.2,
            lookback_s=3600,
            severity="ticket",
            annotations=_notes(
                "Estimated {{ $labels.metric }} of {{ $labels.model }} v{{ $labels.version }} "
                "is {{ $value }}× its reference's",
                "Direct loss estimation on the sampled requests before labels arrive; the "
                "serving.estimated_loss finding says whether late labels confirm it.",
                "estimated-loss",
            ),
        ),
        Rule(
            "ServingMultivariateDrift",
            "threshold",
            "shipyard_serving_multivariate_drift",
            threshold=0,
            lookback_s=3600,
            severity="ticket",
            annotations=_notes(
                "Inputs of {{ $labels.model }} v{{ $labels.version }} move together differently",
                "{{ $labels.method }} flags the sampled requests' joint distribution against "
                "the version's reference rows (a change no single input may show).",
                "multivariate-drift",
            ),
        ),
        Rule(
            "ModelQualityDrop",
            "threshold",
            "shipyard_model_quality_drop",
            threshold=0.05,
            lookback_s=86400,
            severity="ticket",
            annotations=_notes(
                "Quality of {{ $labels.model }} dropped by {{ $value }}",
                "Measured on late labels, or estimated before they arrive.",
                "model-quality",
            ),
        ),
        Rule(
            "ServingLatencyHigh",
            "threshold",
            "shipyard_serving_request_duration_seconds",
            matchers=(Matcher("quantile", "0.99"),),
            threshold=0.5,
            for_s=300,
            lookback_s=600,
            severity="ticket",
            annotations=_notes(
                "p99 latency of {{ $labels.model }} is {{ $value }} s",
                "The 99th percentile stayed above 500 ms for 5 minutes.",
                "serving-latency",
            ),
        ),
        Rule(
            "ModelOutage",
            "threshold",
            "shipyard_serving_probe_up",
            op="<",
            threshold=1,
            for_s=60,
            lookback_s=600,
            severity="page",
            annotations=_notes(
                "{{ $labels.model }} stopped answering",
                "The synthetic probe of the model server failed for a minute.",
                "model-outage",
            ),
        ),
        Rule(
            "ModelTrafficStopped",
            "threshold",
            "shipyard_serving_recent_requests",
            op="<",
            threshold=1,
            for_s=600,
            lookback_s=600,
            severity="page",
            annotations=_notes(
                "{{ $labels.model }} gets no traffic",
                "No request reached any server of the model for 10 minutes (on top of the "
                "monitor's 5-minute lookback), after traffic in the day before.",
                "model-traffic-stopped",
            ),
        ),
        Rule(
            "ServingQuotaHigh",
            "threshold",
            "shipyard_serving_quota_used_fraction",
            threshold=0.9,
            for_s=600,
            lookback_s=600,
            severity="ticket",
            annotations=_notes(
                "A server of {{ $labels.model }} uses {{ $value }} of its {{ $labels.resource }} "
                "lease in {{ $labels.pool }}",
                "Measured usage stayed above 90 % of what the serving lease grants for 10 "
                "minutes: give `shipyard serve` more (--cpu, --memory) or add a replica.",
                "serving-quota",
            ),
        ),
        Rule(
            "ServingBadInput",
            "burn_rate",
            "shipyard_serving_requests_total",
            error_metric="shipyard_serving_data_errors_total",
            objective=1 - BAD_INPUT_SHARE,
            windows=(BurnWindow(3600, 300, 1.0),),
            severity="ticket",
            annotations=_notes(
                "Requests to {{ $labels.model }} v{{ $labels.version }} carry bad input",
                "More than 5 % of the requests over the last hour and the last 5 minutes had "
                "missing, corrupted or wrongly typed values ({{ $value }}× the 5 % allowance).",
                "serving-bad-input",
            ),
        ),
        Rule(
            "CanaryFailed",
            "threshold",
            "shipyard_rollout_failed",
            threshold=0,
            lookback_s=3600,
            severity="page",
            annotations={
                **_notes(
                    "Canary of {{ $labels.model }} v{{ $labels.version }} failed",
                    "Canary analysis failed rollout {{ $labels.rollout }}; traffic went back to "
                    "the stable version (or the rollout paused, as its policy says). "
                    "See the diagnosis: `shipyard rollout status {{ $labels.rollout }}`.",
                    "canary-failed",
                ),
                "runbook": "shipyard rollout status {{ $labels.rollout }}",
            },
        ),
        Rule(
            "ErrorBudgetBurn",
            "burn_rate",
            "shipyard_serving_requests_total",
            error_metric="shipyard_serving_errors_total",
            objective=0.999,
            windows=PAGE_WINDOWS,
            severity="page",
            annotations=_notes(
                "{{ $labels.model }} burns its error budget {{ $value }}× too fast",
                "99.9 % SLO over 30 days; 2 % of the budget gone in 1 h or 5 % in 6 h.",
                "error-budget",
            ),
        ),
        Rule(
            "ErrorBudgetBurn",
            "burn_rate",
            "shipyard_serving_requests_total",
            error_metric="shipyard_serving_errors_total",
            objective=0.999,
            windows=TICKET_WINDOWS,
            severity="ticket",
            annotations=_notes(
                "{{ $labels.model }} burns its error budget",
                "99.9 % SLO over 30 days; 10 % of the budget gone in 3 days.",
                "error-budget",
            ),
        ),
    ]
