"""The Monitors pages' data: every pipeline's monitors, one pipeline's (drift per feature as a
heatmap and trends, schema anomalies, training time against its history), one feature's
reference and current distributions from the drift finding's evidence with its score over
time, and a served model's (input skew, prediction drift, quality from late labels next to its
estimate before them). Read through the registered operations, as :mod:`shipyard.ui.pages`.

The heatmap averages each feature's drift score into two-hour buckets over two days: a
pipeline with 200 features is 4,800 cells, what a screen shows, in one read of the series.
"""

from __future__ import annotations

from typing import Any

from shipyard.api.operations import Context
from shipyard.errors import NotFound
from shipyard.ui import charts
from shipyard.ui.pages import DAY_S, Query, call

DRIFT_WINDOW_S = 2 * DAY_S
DRIFT_BUCKETS = 24
TREND_FEATURES = 12
FEATURE_WINDOW_S = 7 * DAY_S
FEATURE_BUCKETS = 84
QUALITY_WINDOW_S = 7 * DAY_S
QUALITY_BUCKETS = 56
DRIFT_MONITORS = ("feature_drift", "label_drift", "test_set_drift")
SEARCHED_FINDINGS = 5
"""Drift findings opened, newest first, to find the one that judged a feature."""
SHOWN_DATASETS = 5
SERVING_MONITORS = (
    "serving.input_skew",
    "serving.prediction_drift",
    "serving.data_type_problems",
    "serving.quality",
    "serving.estimated_quality",
)
QUALITY_METRICS = ("accuracy", "f1")

Values = list[float | None]


def _matrix(ctx: Context, name: str, window_s: float, buckets: int, **labels: str) -> Any:
    return call(
        ctx, "series.matrix", name=name, label=[f"{k}={v}" for k, v in labels.items()],
        since=ctx.now - window_s, until=ctx.now, buckets=buckets,
    )  # fmt: skip


def _rounded(values: Values) -> Values:
    return [None if v is None else round(v, 4) for v in values]


def _peak(values: Values) -> float:
    return max((v for v in values if v is not None), default=0.0)


def _last(values: Values) -> float | None:
    return next((v for v in reversed(values) if v is not None), None)


def _bars(title: str, bins: list[str], groups: list[tuple[str, list[float]]]) -> charts.Figure:
    """Grouped bars over category ``bins``, one colour per group."""
    return {
        "data": [{"type": "bar", "name": name, "x": bins, "y": ys} for name, ys in groups],
        "layout": {
            "title": {"text": title, "font": {"size": 14}},
            "margin": {"l": 60, "r": 20, "t": 40, "b": 80},
            "height": 320,
            "barmode": "group",
            "xaxis": {"type": "category", "automargin": True},
            "yaxis": {"title": {"text": "share of rows"}, "rangemode": "tozero"},
            "legend": {"orientation": "h", "x": 1, "xanchor": "right", "y": 1.12},
        },
    }


def _with_limit(figure: charts.Figure, name: str, value: float) -> charts.Figure:
    x = [x for trace in figure["data"] for x in trace["x"] if x is not None]
    if x:
        figure["data"].append(
            {"type": "scatter", "mode": "lines", "name": name, "x": [min(x), max(x)],
             "y": [value, value], "line": {"dash": "dash"}}
        )  # fmt: skip
    return figure


# -- every pipeline --------------------------------------------------------------------------


def monitors(ctx: Context, query: Query) -> dict[str, Any]:
    found = call(ctx, "monitors.list", limit=100, cursor=query.get("cursor"))
    findings = call(ctx, "monitors.findings", limit=30)["items"]
    served = [
        {"model": m["name"], "live": m["live"]}
        for m in call(ctx, "models.list", limit=100)["items"]
        if m.get("live")
    ]
    return {"pipelines": found["items"], "next": found["next"], "findings": findings,
            "served_models": served}  # fmt: skip


# -- one pipeline ----------------------------------------------------------------------------


def _drift(ctx: Context, pipeline: str) -> tuple[dict[str, Any], dict[str, charts.Figure]]:
    drift = _matrix(ctx, "shipyard_drift_score", DRIFT_WINDOW_S, DRIFT_BUCKETS, pipeline=pipeline)
    features = []
    rows: list[tuple[str, Values]] = []
    for s in drift["series"]:
        dataset, column = s["labels"].get("dataset", ""), s["labels"].get("column", "")
        values = _rounded(s["values"])
        rows.append((f"{dataset}/{column}", values))
        features.append({"dataset": dataset, "column": column, "peak": _peak(values),
                         "last": _last(values)})  # fmt: skip
    figures = {}
    if rows:
        figures["heatmap"] = charts.heatmap("Drift per feature over time", drift["ts"], rows)
        worst = sorted(rows, key=lambda r: -_peak(r[1]))[:TREND_FEATURES]
        figures["trend"] = charts.lines(
            f"Drift trend, the {len(worst)} most drifted features", drift["ts"], worst, "effect"
        )
    features.sort(key=lambda f: (-f["peak"], f["dataset"], f["column"]))
    return {"features": features, "drift_truncated": drift["truncated"]}, figures


def _latest_per_dataset(ctx: Context, pipeline: str, monitor: str) -> list[dict[str, Any]]:
    """The newest finding of ``monitor`` for each data set of ``pipeline``, with evidence."""
    newest: dict[str, dict[str, Any]] = {}
    for f in call(ctx, "monitors.findings", pipeline=pipeline, monitor=monitor, limit=20)["items"]:
        newest.setdefault(f["subject"], f)
    return [call(ctx, "monitors.finding", finding_id=str(f["id"]))
            for f in list(newest.values())[:SHOWN_DATASETS]]  # fmt: skip


def _problems(ctx: Context, pipeline: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Schema anomalies of each data set's newest ``data_problems`` finding, and the problem
    fraction of each column that had any over the last two days."""
    anomalies = []
    for f in _latest_per_dataset(ctx, pipeline, "data_problems"):
        evidence = f.get("evidence") or {}
        fractions = evidence.get("fractions") or {}
        for a in evidence.get("anomalies") or []:
            anomalies.append({**a, "dataset": f["labels"].get("dataset"), "ts": f["ts"],
                              "status": f["status"], "fraction": fractions.get(a["column"]),
                              "max_fraction": evidence.get("max_fraction")})  # fmt: skip
    series = _matrix(ctx, "shipyard_data_problem_fraction", DRIFT_WINDOW_S, DRIFT_BUCKETS,
                     pipeline=pipeline)  # fmt: skip
    lines = [
        (f"{s['labels'].get('dataset')}/{s['labels'].get('column')}", _rounded(s["values"]))
        for s in series["series"]
        if _peak(s["values"]) > 0
    ]
    figures = {}
    if lines:
        figures["problems"] = charts.lines(
            "Share of rows with missing or corrupted values", series["ts"], lines, "share"
        )
        for trace in figures["problems"]["data"]:  # a batch now and then: a point each
            trace["mode"] = "lines+markers"
    return anomalies, figures


def _training(ctx: Context, pipeline: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The newest training_time verdict with its evidence, and the durations of the last
    succeeded runs against the history's p95 and the limit (factor × p95)."""
    found = call(ctx, "monitors.findings", pipeline=pipeline, monitor="training_time", limit=1)
    if not found["items"]:
        return None, {}
    latest = call(ctx, "monitors.finding", finding_id=str(found["items"][0]["id"]))
    evidence = latest.get("evidence") or {}
    runs = call(ctx, "runs.list", pipeline=pipeline, status="succeeded", limit=50)["items"]
    points = sorted(
        (r["started_at"], r["duration_s"])
        for r in runs
        if r.get("started_at") is not None and r.get("duration_s") is not None
    )
    figures: dict[str, Any] = {}
    if points:
        figure = charts.scatter("Training time of the last succeeded runs", {"run": points}, "s")
        p95 = evidence.get("history_p95_s")
        if isinstance(p95, int | float):
            _with_limit(figure, "history p95", p95)
            factor = evidence.get("factor")
            if isinstance(factor, int | float):
                _with_limit(figure, f"limit ({factor:g} × p95)", factor * p95)
        figures["training"] = figure
    return latest, figures


def monitor(ctx: Context, query: Query, pipeline: str) -> dict[str, Any]:
    info = call(ctx, "monitors.get", pipeline=pipeline)
    findings = call(ctx, "monitors.findings", pipeline=pipeline, limit=30)["items"]
    drift, figures = _drift(ctx, pipeline)
    on = {m["monitor"] for m in info["monitors"] if m["enabled"] or m["last"]}
    anomalies: list[dict[str, Any]] = []
    if "data_problems" in on:
        anomalies, more = _problems(ctx, pipeline)
        figures |= more
    training = None
    if "training_time" in on:
        training, more = _training(ctx, pipeline)
        figures |= more
    return {"monitors": info, "findings": findings, **drift, "anomalies": anomalies,
            "training_time": training, "charts": figures}  # fmt: skip


# -- one feature -----------------------------------------------------------------------------


def _judged(ctx: Context, pipeline: str, dataset: str | None, feature: str) -> Any:
    """The newest drift finding of ``pipeline`` (of ``dataset``) that judged ``feature``, and
    that feature's verdict in it; the columns seen otherwise."""
    seen: set[str] = set()
    found = call(ctx, "monitors.findings", pipeline=pipeline, dataset=dataset, limit=30)["items"]
    drift = [f for f in found if f["monitor"] in DRIFT_MONITORS][:SEARCHED_FINDINGS]
    for f in drift:
        full = call(ctx, "monitors.finding", finding_id=str(f["id"]))
        columns = (full.get("evidence") or {}).get("columns")
        if not isinstance(columns, list):
            continue
        for c in columns:
            if c.get("column") == feature:
                return full, c, seen
        seen |= {str(c.get("column")) for c in columns}
    return None, None, seen


def _shares(counts: list[int]) -> list[float]:
    total = sum(counts)
    return [round(n / total, 6) if total else 0.0 for n in counts]


def feature(ctx: Context, query: Query, pipeline: str, feature: str) -> dict[str, Any]:
    call(ctx, "monitors.get", pipeline=pipeline)  # an unknown pipeline is told as such
    dataset = query.get("dataset") or None
    finding, column, seen = _judged(ctx, pipeline, dataset, feature)
    if finding is not None:
        dataset = finding["labels"].get("dataset", dataset)
    labels = {"pipeline": pipeline, "column": feature, **({"dataset": dataset} if dataset else {})}
    score = _matrix(ctx, "shipyard_drift_score", FEATURE_WINDOW_S, FEATURE_BUCKETS, **labels)
    if column is None and not score["series"]:
        raise NotFound("feature", feature, f"of pipeline {pipeline}", candidates=seen)
    figures: dict[str, Any] = {}
    if column is not None and column.get("bins"):
        figures["distribution"] = _bars(
            f"{feature}: reference and current distribution",
            [str(b) for b in column["bins"]],
            [("reference", _shares(column.get("reference_counts") or [])),
             ("current", _shares(column.get("current_counts") or []))],
        )  # fmt: skip
    if score["series"]:
        figures["score"] = charts.lines(
            f"Drift score of {feature} over the last week", score["ts"],
            [(s["labels"].get("dataset", ""), _rounded(s["values"])) for s in score["series"]],
            "effect",
        )  # fmt: skip
        if column is not None:
            _with_limit(figures["score"], "effect floor", float(column["threshold"]))
    evidence = (finding or {}).get("evidence") or {}
    return {
        "pipeline": pipeline,
        "dataset": dataset,
        "feature": feature,
        "finding": {k: v for k, v in (finding or {}).items() if k != "evidence"} or None,
        "drift": column,
        "config": evidence.get("config"),
        "reference_rows": evidence.get("reference_rows"),
        "current_rows": evidence.get("current_rows"),
        "charts": figures,
    }


# -- one served model ------------------------------------------------------------------------


def _by_version(matrix: dict[str, Any], prefix: str) -> list[tuple[str, Values]]:
    return [(f"{prefix}v{s['labels'].get('version', '?')}", _rounded(s["values"]))
            for s in matrix["series"]]  # fmt: skip


def served(ctx: Context, query: Query, model: str) -> dict[str, Any]:
    info = call(ctx, "models.get", name=model)
    findings = call(ctx, "monitors.findings", model=model, limit=30)["items"]
    latest: dict[str, Any] = {}
    for name in SERVING_MONITORS:
        items = call(ctx, "monitors.findings", model=model, monitor=name, limit=1)["items"]
        if items:
            latest[name] = items[0]
    for name in ("serving.input_skew", "serving.prediction_drift"):
        if name in latest:
            latest[name] = call(ctx, "monitors.finding", finding_id=str(latest[name]["id"]))
            columns = (latest[name].get("evidence") or {}).get("columns")
            if isinstance(columns, list):  # the most drifted first
                columns.sort(key=lambda c: -(c.get("effect") or 0.0))
    figures: dict[str, Any] = {}
    skew = _matrix(ctx, "shipyard_drift_score", DRIFT_WINDOW_S, DRIFT_BUCKETS, model=model)
    if skew["series"]:
        rows = [(f"v{s['labels'].get('version')}/{s['labels'].get('column')}",
                 _rounded(s["values"])) for s in skew["series"]]  # fmt: skip
        figures["skew"] = charts.heatmap("Serving inputs against the training data", skew["ts"],
                                         rows)  # fmt: skip
    predictions = _matrix(ctx, "shipyard_prediction_drift_score", DRIFT_WINDOW_S, DRIFT_BUCKETS,
                          model=model)  # fmt: skip
    if predictions["series"]:
        figures["predictions"] = charts.lines(
            "Prediction drift against the first windows", predictions["ts"],
            _by_version(predictions, ""), "effect",
        )  # fmt: skip
    for metric in QUALITY_METRICS:
        realized = _matrix(ctx, f"shipyard_model_{metric}", QUALITY_WINDOW_S, QUALITY_BUCKETS,
                           model=model)  # fmt: skip
        estimated = _matrix(ctx, f"shipyard_model_estimated_{metric}", QUALITY_WINDOW_S,
                            QUALITY_BUCKETS, model=model)  # fmt: skip
        if realized["series"] or estimated["series"]:
            figures[f"quality-{metric}"] = charts.lines(
                f"{metric}: from late labels and estimated (CBPE) before them", realized["ts"],
                _by_version(realized, "labels ") + _by_version(estimated, "estimated "), metric,
            )  # fmt: skip
    return {
        "model": model,
        "live": info.get("live"),
        "latest": latest,
        "findings": findings,
        "charts": figures,
    }
