"""A regressor's quality on a scoring batch before its labels arrive (DLE), checked against
the labels when they do.

A data pipeline that scores batches publishes its reference with the labels and the model's
predictions (``observe("scores", frame, role="reference", label="y", prediction="pred")``)
and each batch with the predictions (``observe("scores", batch, prediction="pred")``).
The reference's sampled rows train the loss models of
:class:`~shipyard.stats.estimation.DirectLossEstimator` (scikit-learn's histogram gradient
boosting, as NannyML uses LightGBM), which estimate the batch's MAE and RMSE.

A batch that carries labels (they arrived later and the batch is published again with them)
is judged on both: the realised loss is the verdict, and an estimate further than
``tolerance`` from it marks the estimator unreliable (the loss model no longer describes the
data: concept drift), as serving's CBPE check marks miscalibrated probabilities.

Metric points: ``shipyard_estimated_loss{pipeline,dataset,metric}``,
``shipyard_estimated_loss_ratio{…}`` (estimate over the reference's realised loss; the default
``EstimatedLossHigh`` rule reads it) and, with labels, ``shipyard_realised_loss{…}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from shipyard.checks import Check, Metric
from shipyard.monitoring.config import MonitorSpec
from shipyard.monitoring.multivariate import as_pandas, sample_frame
from shipyard.stats.estimation import DirectLossEstimator, realised_loss
from shipyard.statuses import CheckStatus

MIN_ROWS = 30
"""Fewer labelled reference rows (or current rows) than this: no estimate."""


def loss_model() -> Any:
    """A fresh loss model for :class:`~shipyard.stats.estimation.DirectLossEstimator`."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    # small and deterministic: a few hundred to a few thousand reference rows
    return HistGradientBoostingRegressor(
        max_iter=50, max_leaf_nodes=15, early_stopping=False, random_state=0
    )


@dataclass(frozen=True)
class LossJudgement:
    """An estimated loss judged against the reference's realised loss and, once labels arrived,
    against the realised loss (shared by the pipeline and the serving checks)."""

    estimate: dict[str, float]
    ratios: dict[str, float]  # estimate over the reference's loss
    high: list[str]  # metrics whose ratio passes max_ratio
    status: CheckStatus
    notes: list[str]
    gap: dict[str, float] | None  # |estimate - realised| / realised, with labels

    def summary(self, lead: str = "", tail: str = "", max_ratio: float = 0.0) -> str:
        shown = ", ".join(
            f"{k} {v:.4g} ({self.ratios[k]:.2f}× reference)" for k, v in self.estimate.items()
        )
        text = f"{lead}estimated {shown}{tail}"
        if self.high:
            text += f"; above {max_ratio:g}× the reference for {', '.join(self.high)}"
        if self.notes:
            text += "; " + "; ".join(self.notes)
        return text


def judge_loss(
    estimate: dict[str, float],
    reference_loss: dict[str, float],
    realised: dict[str, float] | None,
    max_ratio: float,
    tolerance: float,
) -> LossJudgement:
    """ALERT when the estimate (or, with labels, the realised loss) passes ``max_ratio`` × the
    reference's; WARNING at least when the estimate is further than ``tolerance`` from the
    realised loss (the loss model no longer describes the data)."""
    ratios = {
        k: v / reference_loss[k] if reference_loss[k] > 0 else float(v > 0)
        for k, v in estimate.items()
    }
    high = sorted(k for k, r in ratios.items() if r > max_ratio)
    status = CheckStatus.ALERT if high else CheckStatus.OK
    notes: list[str] = []
    gap = None
    if realised is not None:
        gap = {
            k: abs(estimate[k] - v) / v if v > 0 else abs(estimate[k]) for k, v in realised.items()
        }
        if any(realised[k] > max_ratio * reference_loss[k] for k in realised):
            status = CheckStatus.ALERT
            notes.append("the labels confirm the loss is higher")
        off = sorted(k for k, g in gap.items() if g > tolerance)
        if off:
            status = max(status, CheckStatus.WARNING, key=lambda s: s.severity)
            notes.append(
                f"estimate off by more than {tolerance:.0%} of the realised {', '.join(off)}: "
                "the loss model no longer describes the data (concept drift?); "
                "estimate unreliable"
            )
    return LossJudgement(estimate, ratios, high, status, notes, gap)


def performance_estimation(
    spec: MonitorSpec, pipeline: str, dataset: str, sample: dict[str, Any], frame: Any
) -> Check | None:
    """DLE on the current ``frame``; ``None`` unless the reference kept a prediction column
    and a numeric label, and the frame carries the prediction."""
    prediction, label = sample.get("prediction"), sample.get("label")
    data = as_pandas(frame)
    if prediction is None or label is None or prediction not in data.columns:
        return None
    name = "performance_estimation"
    features: list[str] = [c for c in sample["features"] if c in data.columns]
    reference = sample_frame(sample).dropna(subset=[label, prediction])
    if len(reference) < MIN_ROWS or len(data) < MIN_ROWS:
        return Check.of_pipeline(
            name,
            pipeline,
            CheckStatus.OK,
            f"{dataset}: {len(reference)} labelled reference and {len(data)} current rows; "
            f"{MIN_ROWS} needed to estimate",
            dataset,
        )
    try:
        current_x = data[features].to_numpy(dtype=np.float64, na_value=np.nan)
        current_p = data[prediction].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        return Check.of_pipeline(
            name, pipeline, CheckStatus.WARNING, f"{dataset}: non-numeric values ({exc})", dataset
        )
    # one thread: a few thousand rows fit in a fraction of a second on one core, and OpenMP's
    # threads on a busy machine (or beside the daemon's other tasks) make it 10-20× slower
    with threadpool_limits(limits=1, user_api="openmp"):
        dle = DirectLossEstimator(loss_model).fit(
            reference[features].to_numpy(), reference[prediction].to_numpy(), reference[label]
        )
        estimate = dle.estimate(current_x, current_p)
    max_ratio = float(spec.options["max_ratio"])
    tolerance = float(spec.options["tolerance"])
    base = {"pipeline": pipeline, "dataset": dataset}
    realised = None
    labelled = label in data.columns and pd.api.types.is_numeric_dtype(data[label].dtype)
    if labelled and np.isfinite(data[label].to_numpy(dtype=np.float64, na_value=np.nan)).any():
        realised = realised_loss(data[label].to_numpy(dtype=np.float64, na_value=np.nan), current_p)
    judged = judge_loss(estimate, dle.reference_, realised, max_ratio, tolerance)
    metrics: list[Metric] = [
        ("shipyard_estimated_loss", {**base, "metric": k}, v) for k, v in estimate.items()
    ]
    metrics += [
        ("shipyard_estimated_loss_ratio", {**base, "metric": k}, v)
        for k, v in judged.ratios.items()
    ]
    evidence: dict[str, Any] = {
        "rows": len(data),
        "reference_rows": len(reference),
        "estimate": estimate,
        "reference_loss": dle.reference_,
        "ratio": judged.ratios,
        "assumptions": "no concept drift (P(y|x) unchanged since the reference)",
    }
    if realised is not None:
        evidence |= {"realised": realised, "relative_gap": judged.gap}
        metrics += [
            ("shipyard_realised_loss", {**base, "metric": k}, v) for k, v in realised.items()
        ]
    status, summary = judged.status, judged.summary(f"{dataset}: ", max_ratio=max_ratio)
    return Check.of_pipeline(name, pipeline, status, summary, dataset, None, evidence, metrics)
