"""Multivariate drift of a data set: what the reference keeps, and the monitor that uses it.

A reference published with ``observe(..., role="reference")`` keeps, beside its profile, a
*sample*: up to :data:`SAMPLE_ROWS` of its rows (numeric features, the prediction and a
numeric label) and the PCA fit of :class:`~shipyard.stats.multivariate.ReconstructionDrift` on
all of its rows. A current data set is then judged on how its features move together:

- the mean PCA reconstruction error against the band from the reference's own chunks;
- the MMD kernel two-sample test of a sample of its rows against the reference's sample.

The monitor runs for data sets of at most ``max_columns`` numeric features (default 50; costs
in docs/statistics.md) and is silent for others (and for categorical columns, which it does
not read). Metric points: ``shipyard_reconstruction_error{pipeline,dataset}`` (the statistic)
and ``shipyard_multivariate_drift{pipeline,dataset,method}`` (1 when the method flags the
data set, else 0), which the default ``MultivariateDrift`` rule reads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from shipyard.checks import Check
from shipyard.errors import InvalidInput
from shipyard.monitoring.config import MonitorSet, MonitorSpec
from shipyard.stats.multivariate import ReconstructionDrift, mmd_test
from shipyard.statuses import CheckStatus

SAMPLE_ROWS = 2000
"""Rows of a reference kept for the MMD test and the loss estimator."""
SAMPLE_MEDIA_TYPE = "application/vnd.shipyard.reference-sample+json"
FIT_ROWS = 200_000
"""The PCA is fitted on at most this many reference rows (drawn at random): 50 columns of
them cost 80 MB of floats, and the components and band of a larger sample barely move."""
MIN_REFERENCE_ROWS = 40
"""Fewer reference rows than this and no PCA is fitted (two halves of 20 chunks)."""


def as_pandas(frame: Any) -> pd.DataFrame:
    return frame if isinstance(frame, pd.DataFrame) else frame.to_pandas()


def numeric_features(frame: pd.DataFrame, exclude: tuple[str | None, ...]) -> list[str]:
    """The numeric, non-boolean columns of ``frame`` other than ``exclude`` (label,
    prediction), in the frame's order."""
    out = []
    for name in frame.columns:
        column = frame[name]
        if str(name) in exclude or pd.api.types.is_bool_dtype(column.dtype):
            continue
        if pd.api.types.is_numeric_dtype(column.dtype):
            out.append(str(name))
    return out


def _floats(frame: pd.DataFrame, columns: list[str]) -> np.ndarray[Any, Any]:
    return np.asarray(frame[columns].to_numpy(dtype=np.float64, na_value=np.nan))


def reference_sample(
    monitors: MonitorSet, frame: Any, label: str | None, prediction: str | None
) -> dict[str, Any] | None:
    """What a reference keeps for the multivariate and loss-estimation monitors; ``None``
    when neither is on or the frame has no numeric feature."""
    multivariate = monitors.enabled("multivariate_drift")
    if not (multivariate or monitors.enabled("performance_estimation")):
        return None
    data = as_pandas(frame)
    features = numeric_features(data, (label, prediction))
    if not features:
        return None
    keep = list(features)
    if prediction is not None:
        keep.append(prediction)
    numeric_label = label is not None and pd.api.types.is_float_dtype(data[label].dtype)
    if numeric_label and label is not None:
        keep.append(label)
    spec = monitors.get("multivariate_drift")
    judged = multivariate and len(features) <= int(spec.options["max_columns"])
    estimable = (
        monitors.enabled("performance_estimation") and prediction is not None and numeric_label
    )
    if not (judged or estimable):
        return None
    rows = data
    if len(data) > SAMPLE_ROWS:
        rows = data.iloc[np.sort(np.random.default_rng(0).choice(len(data), SAMPLE_ROWS, False))]
    reconstruction = None
    if judged and len(data) >= MIN_REFERENCE_ROWS:
        fit_rows = data
        if len(data) > FIT_ROWS:  # bounded time and memory for a reference of any size
            picked = np.random.default_rng(1).choice(len(data), FIT_ROWS, replace=False)
            fit_rows = data.iloc[np.sort(picked)]
        fit = ReconstructionDrift(float(spec.options["variance_kept"]))
        reconstruction = fit.fit(_floats(fit_rows, features)).to_json()
    return {
        "features": features,
        "label": label if numeric_label else None,
        "prediction": prediction,
        "columns": keep,
        "rows": _floats(rows, keep).tolist(),
        "reference_rows": len(data),
        "reconstruction": reconstruction,
    }


def sample_frame(sample: dict[str, Any]) -> pd.DataFrame:
    """The reference's sampled rows as a frame."""
    return pd.DataFrame(np.asarray(sample["rows"], dtype=np.float64), columns=sample["columns"])


def multivariate_drift(
    spec: MonitorSpec, pipeline: str, dataset: str, sample: dict[str, Any], frame: Any
) -> Check | None:
    """Judge the current ``frame``'s joint distribution against the reference's sample and
    PCA fit; ``None`` when the data set has too many columns (or none) to be judged."""
    features: list[str] = sample["features"]
    if not features or len(features) > int(spec.options["max_columns"]):
        return None
    name = "multivariate_drift"
    data = as_pandas(frame)
    absent = [c for c in features if c not in data.columns]
    if absent:
        return Check.of_pipeline(
            name,
            pipeline,
            CheckStatus.WARNING,
            f"{dataset} lacks {len(absent)} reference column(s) ({', '.join(absent[:5])}): "
            "multivariate drift not judged",
            dataset,
        )
    try:
        current = _floats(data, features)
    except (TypeError, ValueError) as exc:
        return Check.of_pipeline(
            name, pipeline, CheckStatus.WARNING, f"{dataset}: non-numeric values ({exc})", dataset
        )
    base = {"pipeline": pipeline, "dataset": dataset}
    results = []
    metrics = []
    if sample.get("reconstruction"):
        pca = ReconstructionDrift.from_json(sample["reconstruction"]).test(current)
        results.append(pca)
        metrics.append(("shipyard_reconstruction_error", base, pca.statistic))
    reference = _floats(sample_frame(sample), features)
    if len(reference) >= 2 and len(current) >= 2:
        try:
            mmd = mmd_test(
                reference,
                current,
                sample_rows=int(spec.options["sample_rows"]),
                permutations=int(spec.options["permutations"]),
                alpha=float(spec.options["alpha"]),
            )
        except InvalidInput:
            mmd = None
        if mmd is not None:
            results.append(mmd)
    if not results:
        return Check.of_pipeline(
            name, pipeline, CheckStatus.OK, f"{dataset}: too few rows to compare", dataset
        )
    metrics += [
        ("shipyard_multivariate_drift", {**base, "method": r.method}, float(r.drifted))
        for r in results
    ]
    flagged = [r for r in results if r.drifted]
    parts = []
    for r in results:
        if r.method == "reconstruction_error":
            parts.append(
                f"reconstruction error {r.statistic:.3g} "
                f"({'outside' if r.drifted else 'inside'} [{r.lower:.3g}, {r.upper:.3g}])"
            )
        else:
            parts.append(f"MMD² {r.statistic:.3g} (p={r.p_value:.3g})")
    status = CheckStatus.ALERT if flagged else CheckStatus.OK
    verdict = "features move together differently" if flagged else "no multivariate drift"
    summary = f"{dataset}: {verdict} over {len(features)} column(s): {'; '.join(parts)}"
    evidence = {
        "columns": features,
        "rows": len(current),
        "results": [r.to_json() for r in results],
    }
    return Check.of_pipeline(name, pipeline, status, summary, dataset, None, evidence, metrics)
