"""The monitors of data pipelines (DESIGN.md's table, "data"): drift of feature values, drift of
label values, and data-type problems (missing or corrupted values).

Each takes the reference and current profiles (or the current frame and the reference's
schema) and returns a :class:`~shipyard.checks.Check`. The statistics are
:func:`shipyard.stats.compare`'s: a column drifts only when its change is significant after the
Benjamini–Hochberg correction across the tested columns *and* larger than an effect-size floor
(see docs/statistics.md).

Metric points: ``shipyard_drift_score{pipeline,dataset,column}`` (the effect size of a column
that drifted — Wasserstein-1 / σ_ref for numbers, Jensen–Shannon distance base 2 for
categories — and 0 for one that did not; see :func:`drift_score`),
``shipyard_dataset_drift_share{pipeline,dataset}`` (share of drifted feature columns) and
``shipyard_data_problem_fraction{pipeline,dataset,column}``.
"""

from __future__ import annotations

from typing import Any

from shipyard.checks import Check
from shipyard.monitoring.config import MonitorSpec
from shipyard.stats import Anomaly, ColumnDrift, DatasetProfile, Schema, compare, validate
from shipyard.statuses import CheckStatus

PROBLEM_KINDS = ("missing_column", "wrong_type", "nulls_above_expectation", "nan_or_inf")
"""Anomalies that are data-type problems: values missing (above what the reference had),
of the wrong type, or ±inf/NaN. Out-of-range values and unseen categories are evidence but
not counted: they are what drift monitors judge."""


def _subset(profile: DatasetProfile, columns: list[str]) -> DatasetProfile:
    return DatasetProfile(
        {c: profile.columns[c] for c in columns if c in profile.columns}, profile.rows
    )


def drift_score(column: ColumnDrift) -> float:
    """The column's effect size when it drifted, else 0.

    The effect alone cries wolf: on a batch of a hundred rows W1/σ_ref is 0.2 by chance, and a
    column that is constant in the reference has an unbounded one. Only a change that is also
    significant (BH-adjusted p < α) counts, so an alert rule on this series (the default
    ``DataDrift``: > 0.2) fires on real drift only. The raw effect and p-value stay in the
    finding's evidence.
    """
    return float(column.effect) if column.drifted else 0.0


def drift_check(
    monitor: str,
    spec: MonitorSpec,
    pipeline: str,
    dataset: str,
    reference: DatasetProfile,
    current: DatasetProfile,
    columns: list[str],
    what: str,
    share_metric: bool = True,
) -> Check:
    """Compare ``columns`` of the current profile with the reference's: one check, a drift score
    per column and (``share_metric``) the drifted share of the data set."""
    ref = _subset(reference, columns)
    if not ref.columns:
        return Check.of_pipeline(
            monitor, pipeline, CheckStatus.OK, f"no {what} column to compare", dataset
        )
    report = compare(ref, _subset(current, columns), spec.drift_config())
    base = {"pipeline": pipeline, "dataset": dataset}
    metrics = [
        ("shipyard_drift_score", {**base, "column": c.column}, drift_score(c))
        for c in report.columns
    ]
    if share_metric:  # one series per data set: the features' share, not the label's
        metrics.append(("shipyard_dataset_drift_share", base, float(report.share_drifted)))
    drifted = report.drifted_columns
    if report.drifted:
        status = CheckStatus.ALERT
    elif drifted:
        status = CheckStatus.WARNING
    else:
        status = CheckStatus.OK
    summary = f"{what} of {dataset}: {report.drifted_summary()}"
    evidence = {
        **report.to_json(),
        "reference_rows": reference.rows,
        "current_rows": current.rows,
    }
    return Check.of_pipeline(monitor, pipeline, status, summary, dataset, None, evidence, metrics)


def feature_drift(
    spec: MonitorSpec,
    pipeline: str,
    dataset: str,
    reference: DatasetProfile,
    current: DatasetProfile,
    label: str | None,
) -> Check:
    """Drift of every feature column (all reference columns but the label)."""
    columns = [c for c in reference.columns if c != label]
    return drift_check(
        "feature_drift", spec, pipeline, dataset, reference, current, columns, "features"
    )


def label_drift(
    spec: MonitorSpec,
    pipeline: str,
    dataset: str,
    reference: DatasetProfile,
    current: DatasetProfile,
    label: str | None,
) -> Check:
    """Drift of the label column's distribution (prior shift)."""
    if label is None:
        return Check.of_pipeline(
            "label_drift",
            pipeline,
            CheckStatus.OK,
            f"{dataset} has no label column (observe(label=…))",
            dataset,
        )
    if label not in reference.columns:
        return Check.of_pipeline(
            "label_drift",
            pipeline,
            CheckStatus.OK,
            f"the reference of {dataset} has no {label!r}",
            dataset,
        )
    labels = current.columns.get(label)
    if labels is None or labels.missing >= labels.count:
        return Check.of_pipeline(
            "label_drift",
            pipeline,
            CheckStatus.OK,
            f"{dataset} has no labels yet (scoring data)",
            dataset,
        )
    return drift_check(
        "label_drift", spec, pipeline, dataset, reference, current, [label], "labels", False
    )


def data_problems(
    spec: MonitorSpec,
    pipeline: str,
    dataset: str,
    frame: Any,
    schema: Schema,
    label: str | None = None,
) -> Check:
    """Share of each column's rows with a data-type problem, against the reference's schema.

    fraction(column) = min(1, Σ rows of the column's problem anomalies / rows of the batch),
    written for every schema column (0 when clean) so that an alert also resolves. A batch
    without its label column is scoring data whose labels come later, not a broken batch.
    """
    if label is not None and label not in [str(c) for c in frame.columns]:
        schema = Schema({n: c for n, c in schema.columns.items() if n != label})
    anomalies = validate(frame, schema)
    rows = max(len(frame), 1)
    per_column: dict[str, int] = dict.fromkeys(schema.columns, 0)
    problems: list[Anomaly] = [a for a in anomalies if a.kind in PROBLEM_KINDS]
    for a in problems:
        per_column[a.column] = per_column.get(a.column, 0) + a.rows
    fractions = {c: min(1.0, n / rows) for c, n in per_column.items()}
    base = {"pipeline": pipeline, "dataset": dataset}
    metrics = [
        ("shipyard_data_problem_fraction", {**base, "column": c}, f) for c, f in fractions.items()
    ]
    limit = float(spec.options.get("max_fraction", 0.05))
    bad = sorted((c for c, f in fractions.items() if f > limit), key=lambda c: -fractions[c])
    if bad:
        named = ", ".join(f"{c} ({fractions[c]:.1%})" for c in bad[:10])
        kinds = sorted({a.kind for a in problems if a.column in bad})
        status = CheckStatus.ALERT
        summary = f"{dataset}: missing or corrupted values in {named} ({', '.join(kinds)})"
    elif problems:
        status = CheckStatus.WARNING
        summary = f"{dataset}: a few problem values, all columns within {limit:.0%}"
    else:
        status = CheckStatus.OK
        summary = f"{dataset}: no missing or corrupted values beyond the reference's"
    evidence = {
        "rows": len(frame),
        "max_fraction": limit,
        "fractions": {c: f for c, f in fractions.items() if f > 0},
        "anomalies": [a.to_json() for a in anomalies],
    }
    return Check.of_pipeline(
        "data_problems", pipeline, status, summary, dataset, None, evidence, metrics
    )
