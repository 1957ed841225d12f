"""Model performance from what serving records: latency quantiles from bucketed histograms,
quality estimated before labels arrive (CBPE) and the calibration that estimate relies on."""

from __future__ import annotations

from typing import Any

import numpy as np

from shipyard.errors import InvalidInput


def histogram_quantile(q: float, buckets_s: list[float], counts: list[int]) -> float | None:
    """The q-quantile of a bucketed latency histogram, interpolated linearly inside its bucket.

    This is Prometheus' ``histogram_quantile`` rule (prometheus.io/docs/prometheus/latest/
    querying/functions/#histogram_quantile): find the bucket where the cumulative count passes
    ``q·N`` and interpolate between its bounds; the open last bucket answers its lower bound.
    """
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    cumulative = 0
    for i, c in enumerate(counts):
        if cumulative + c >= rank and c > 0:
            if i == len(buckets_s):
                return buckets_s[-1]
            lower = buckets_s[i - 1] if i > 0 else 0.0
            return lower + (buckets_s[i] - lower) * (rank - cumulative) / c
        cumulative += c
    return buckets_s[-1]


def cbpe(proba: np.ndarray[Any, Any], classes: list[Any]) -> dict[str, float]:
    """Confidence-based performance estimation of a classifier without labels.

    If the predicted probabilities are calibrated (P(y = ŷ | p) = p_ŷ), each row contributes
    its probability of being right to an *expected* confusion matrix. For a binary classifier
    with positive-class probability p and prediction ŷ = [p ≥ ½]: E[TP] = Σ_{ŷ=1} p,
    E[FP] = Σ_{ŷ=1} (1−p), E[FN] = Σ_{ŷ=0} p, E[TN] = Σ_{ŷ=0} (1−p); expected accuracy is
    mean(max_k p_k) for any number of classes; expected F1 = 2·TP / (2·TP + FP + FN).

    Assumptions (checked by ``ServingMonitor.estimated_quality`` where labels exist):
    calibrated probabilities, and no concept drift (P(y|x) unchanged since calibration).
    Reference: NannyML, "Confidence-based Performance Estimation (CBPE)",
    nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html.
    """
    if proba.ndim != 2 or proba.shape[1] != len(classes) or proba.shape[0] == 0:
        raise InvalidInput("cbpe needs an (n, classes) probability array")
    out = {"expected_accuracy": float(proba.max(axis=1).mean())}
    if len(classes) == 2:
        p = proba[:, 1]
        yhat = p >= 0.5
        tp, fp = float(p[yhat].sum()), float((1 - p[yhat]).sum())
        fn = float(p[~yhat].sum())
        out["expected_f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0
    return out


def expected_calibration_error(
    proba_positive: np.ndarray[Any, Any], labels: np.ndarray[Any, Any], bins: int = 10
) -> float:
    """ECE = Σ_b (n_b/N)·|mean(y)_b − mean(p)_b| over equal-width probability bins
    (Naeini, Cooper & Hauskrecht, AAAI 2015; Guo et al., ICML 2017, eq. 3)."""
    idx = np.minimum((proba_positive * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(labels[sel].mean() - proba_positive[sel].mean())
    return float(ece)
