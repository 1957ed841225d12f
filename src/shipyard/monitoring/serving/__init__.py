"""The monitors of a model in service (DESIGN.md's table, "serving" and "every model in service").

Each check reads the windows that the model server flushed, the logged predictions and late
labels through :mod:`shipyard.serving.records` (the recent period is ``(now - period_s, now]``,
a window counted by its end, as the canary judge counts it), and returns a
:class:`~shipyard.checks.Check`;
:meth:`ServingMonitor.run` writes every check as a ``Finding`` and its numbers as
``MetricPoint`` rows, in one transaction.

- **input skew**: serving inputs against the training data's reference profile.
- **prediction drift**: predictions of recent windows against the version's first windows.
- **data-type problems**: the share of requests refused for bad input.
- **latency**: p50/p95/p99 from the merged latency histograms.
- **quality** from late labels joined to logged predictions by request id: accuracy, F1 and AUC
  (classifiers) or MAE and RMSE (regressors).
- **estimated quality** before labels arrive: confidence-based performance estimation (CBPE).
- **estimated loss** of a regressor before labels arrive: direct loss estimation (DLE) on the
  request log's sampled rows, with loss models fitted on the version's reference rows
  (:mod:`~shipyard.monitoring.serving.reference`), checked against the late labels.
- **multivariate drift** of the sampled rows against the reference rows (PCA reconstruction
  error and an MMD test), for versions of few enough inputs.
- **outage**: a synthetic probe of the server(s) and the absence of traffic that was expected.
- **quota**: what each live server of the model uses of the quota lease it holds.

The quality checks also write ``shipyard_model_quality_drop{model,version,metric,source}``:
the registered metric minus the measured (``source="labels"``) or estimated
(``source="estimated"``) one, so that a positive value is always worse (measured minus
registered for the lower-is-better ``mae`` and ``rmse``) — the series ``ModelQualityDrop`` reads.
"""

from shipyard.monitoring.serving.base import (
    QUALITY_DROP,
    QUOTA_USED_FRACTION,
    ServingMonitorConfig,
)
from shipyard.monitoring.serving.monitor import ServingMonitor, monitor_live_models
from shipyard.monitoring.serving.quality import quality_drop

__all__ = [
    "QUALITY_DROP",
    "QUOTA_USED_FRACTION",
    "ServingMonitor",
    "ServingMonitorConfig",
    "monitor_live_models",
    "quality_drop",
]
