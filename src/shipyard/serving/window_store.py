"""A window's way into the store: one transaction per window, nothing half-written.

The window row (counts, latency histograms, summaries and the input and prediction profiles),
its logged predictions, its traced requests (W3C trace ids, ``serving_traces``), its sampled raw
requests as a Parquet artifact and the window's share of
the cumulative ``shipyard_serving_*`` counters (:mod:`shipyard.serving.counters`) are written
together, so a worker killed at any moment loses at most the window it was filling. Profiles (the
statistics wing's mergeable ``DatasetProfile``) are built here, in the flush thread, never on the
request path.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from sqlalchemy import Table, insert

from shipyard.registry import PREDICTION_COLUMN
from shipyard.serving.counters import add_window_counts
from shipyard.serving.window import Window
from shipyard.store.serving import PredictionRecord, ServingWindow, TracedRequest

if TYPE_CHECKING:
    from shipyard.artifacts import ArtifactStore
    from shipyard.store import Store

log = logging.getLogger("shipyard.serving")

REQUEST_LOG_MEDIA_TYPE = "application/vnd.apache.parquet"
PREDICTIONS = cast(Table, PredictionRecord.__table__)  # Core insert: no ORM bookkeeping per row
TRACES = cast(Table, TracedRequest.__table__)


def write_window(
    store: Store,
    artifacts: ArtifactStore | None,
    worker: str,
    model: str,
    version: int,
    w: Window,
    end: float,
) -> None:
    """The window row, its logged predictions, its sampled requests (a Parquet artifact) and
    the cumulative counters, in one transaction."""
    x = np.concatenate(w.inputs) if w.inputs else np.empty((0, len(w.columns)))
    preds = (
        np.concatenate([np.asarray(p).reshape(len(p), -1)[:, 0] for _, _, p, _ in w.predictions])
        if w.predictions
        else np.empty(0)
    )
    summary: dict[str, Any] = {"inputs": _summary(x, w.columns) if len(x) else {}}
    if preds.size and preds.dtype.kind in "fiub":
        values, counts = np.unique(preds, return_counts=True)
        summary["predictions"] = (
            {str(v): int(c) for v, c in zip(values.tolist(), counts.tolist(), strict=True)}
            if values.size <= 50
            else {"mean": float(preds.mean())}
        )
    input_profile, prediction_profile = _profiles(x, preds, w)
    with store.session(immediate=True) as s:
        s.add(
            ServingWindow(
                model=model,
                version=version,
                worker=worker,
                window_start=w.start,
                window_end=end,
                requests=w.requests,
                rows=w.rows,
                errors=w.errors,
                data_errors=w.data_errors,
                latency_s=w.latency_json(),
                input_profile=input_profile,
                prediction_profile=prediction_profile,
                summary=summary,
            )
        )
        if w.predictions:
            s.execute(insert(PREDICTIONS), _prediction_rows(w, preds))
        if w.traces:
            s.execute(insert(TRACES), _trace_rows(w, worker))
        if w.samples and artifacts is not None:
            artifacts.put_bytes(
                _parquet(w.samples, model, version),
                REQUEST_LOG_MEDIA_TYPE,
                {
                    "kind": "serving_request_log",
                    "model": model,
                    "version": version,
                    "window_start": w.start,
                    "rows": len(w.samples),
                },
                session=s,
            )
        add_window_counts(
            s, store.dialect, model, version,
            requests=w.requests, errors=w.errors, data_errors=w.data_errors,
            start=w.start, end=end,
        )  # fmt: skip


def _summary(values: np.ndarray[Any, Any], names: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if values.dtype.kind not in "fiub":
        return out
    for j, name in enumerate(names):
        col = values[:, j].astype(np.float64)
        ok = col[np.isfinite(col)]
        out[name] = {
            "count": int(col.size),
            "missing": int(col.size - ok.size),
            "mean": float(ok.mean()) if ok.size else None,
            "std": float(ok.std()) if ok.size else None,
            "min": float(ok.min()) if ok.size else None,
            "max": float(ok.max()) if ok.size else None,
        }
    return out


def _profiles(
    x: np.ndarray[Any, Any], preds: np.ndarray[Any, Any], w: Window
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Input and prediction profiles, binned on the version's reference profile when it has one.

    Binning on the same edges is what lets windows from several workers and several flushes
    merge into one profile (see :meth:`shipyard.stats.DatasetProfile.merge`).
    """
    import pandas as pd

    from shipyard.stats import DatasetProfile

    names = list(w.columns)
    ref = DatasetProfile.from_json(w.reference) if w.reference else None
    try:
        inputs = None
        if len(x):
            ref_inputs = (
                DatasetProfile({n: ref.columns[n] for n in names if n in ref.columns}, ref.rows)
                if ref is not None
                else None
            )
            inputs = DatasetProfile.from_frame(
                pd.DataFrame(x, columns=names), reference=ref_inputs
            ).to_json()
        predictions = None
        if preds.size:
            ref_preds = (
                DatasetProfile({PREDICTION_COLUMN: ref.columns[PREDICTION_COLUMN]}, ref.rows)
                if ref is not None and PREDICTION_COLUMN in ref.columns
                else None
            )
            predictions = DatasetProfile.from_frame(
                pd.DataFrame({PREDICTION_COLUMN: preds}), reference=ref_preds
            ).to_json()
    except Exception as exc:  # a profile is telemetry: never let it stop a flush
        log.warning("cannot profile a serving window: %s", exc)
        return None, None
    return inputs, predictions


def _prediction_rows(w: Window, flat: np.ndarray[Any, Any]) -> list[dict[str, Any]]:
    """One row per request, built from one ``tolist`` of all the window's predictions."""
    values = flat.tolist()
    rows, offset = [], 0
    for rid, ts, p, pr in w.predictions:
        n = len(p)
        rows.append(
            {
                "request_id": rid,
                "model": w.model,
                "version": w.version,
                "ts": ts,
                "prediction": values[offset : offset + n],
                "confidence": None if pr is None else pr.tolist(),
            }
        )
        offset += n
    return rows


def _trace_rows(w: Window, worker: str) -> list[dict[str, Any]]:
    return [
        {
            "trace_id": trace_id,
            "span_id": span_id,
            "parent_id": parent_id,
            "request_id": rid,
            "model": w.model,
            "version": w.version,
            "worker": worker,
            "window_start": w.start,
            "ts": ts,
            "status": status,
            "latency_ms": latency_ms,
        }
        for trace_id, span_id, parent_id, rid, ts, status, latency_ms in w.traces
    ]


def _parquet(samples: list[dict[str, Any]], model: str, version: int) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "request_id": [r["request_id"] for r in samples],
            "trace_id": [r.get("trace_id") for r in samples],
            "ts": [r["ts"] for r in samples],
            "model": [model] * len(samples),
            "version": [version] * len(samples),
            "status": [r["status"] for r in samples],
            "request": [r["request"] for r in samples],
            "response": [r["response"] for r in samples],
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()
