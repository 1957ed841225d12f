"""What went wrong with a failed canary, stored with the rollout so a person can see why.

The report holds: the failed metrics with their evidence (statistic, p, effect, interval,
sample sizes, reason); the input features whose distribution on the canary drifted from the
version's training data (the statistics wing's :func:`shipyard.stats.compare` on the merged
serving-window input profiles), ranked by how much of the change in the canary's predictions
each explains (each put back to its training distribution in the canary's sampled inputs and
re-run through the canary's model; :func:`rank_causes`), with robust effect sizes that a column
constant in training cannot blow up; example failing requests from the servers' sampled
request log; and, when the canary answered without errors but differently, the requests where
it disagrees with the stable version (the stable model re-run on the canary's sampled inputs).
The report is opened (marked pending) in the transaction that rolls the canary back and
completed after that commit, so the replay never keeps a failing canary live; every part of it
is bounded (a few log files, a few hundred rows) and none of it can stop the rollback.
A candidate that failed at replay answered no user: its report is the replay's own evidence
(the rows it answers differently than the stable version did, the rows it failed on), written
complete in the rollback's transaction.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from shipyard.artifacts import ArtifactStore
from shipyard.errors import ShipyardError
from shipyard.registry import Registry
from shipyard.serving import records as serving_records
from shipyard.stats import DatasetProfile, DriftReport, compare
from shipyard.stats.attribution import explained_change, robust_effect
from shipyard.store import Store
from shipyard.store.deploy import Diagnosis, RolloutRecord
from shipyard.store.tables import ArtifactRecord

if TYPE_CHECKING:
    from shipyard.stats.canary import MetricVerdict

log = logging.getLogger("shipyard.deploy")

MAX_EXAMPLES = 5
MAX_LOG_FILES = 20
MAX_REPLAYED_ROWS = 500


def _merged_inputs(
    s: Session, model: str, version: int, start: float, end: float
) -> DatasetProfile | None:
    merged: DatasetProfile | None = None
    for w in serving_records.windows(s, model, version, start, end):
        if not w.input_profile:
            continue
        p = DatasetProfile.from_json(w.input_profile)
        merged = p if merged is None else merged.merge(p)
    return merged


def _training_profile(
    registry: Registry | None, model: str, version: int
) -> tuple[dict[str, Any] | None, tuple[str, ...] | None]:
    """The version's training profile and its input column names (the signature's)."""
    if registry is None:
        return None, None
    try:
        info = registry.get(model, version)
    except ShipyardError:
        return None, None
    return info.reference_profile, info.signature.names


def drifting_inputs(
    s: Session, r: RolloutRecord, start: float, end: float, registry: Registry | None = None
) -> dict[str, Any]:
    """Canary inputs against the version's training profile (else the stable version's inputs).

    Each drifted numeric column also gets its :func:`~shipyard.stats.attribution.robust_effect`
    (W₁ over the larger of the two sides' spreads, floored relative to the feature's
    magnitude), and the columns are listed largest robust effect first."""
    return _drift(s, r, start, end, registry)[0]


def _drift(
    s: Session, r: RolloutRecord, start: float, end: float, registry: Registry | None
) -> tuple[dict[str, Any], DatasetProfile | None]:
    """:func:`drifting_inputs` and the reference profile it compared against."""
    current = _merged_inputs(s, r.model, r.version, start, end)
    if current is None:
        return {"available": False, "why": "no input profiles were flushed for the canary"}, None
    reference, against = None, ""
    training, input_names = _training_profile(registry, r.model, r.version)
    if training:
        reference, against = DatasetProfile.from_json(training), "training data"
    elif r.stable_version is not None:
        reference = _merged_inputs(s, r.model, r.stable_version, start, end)
        against = f"stable version {r.stable_version}"
    if reference is None:
        return {"available": False, "why": "nothing to compare the canary's inputs with"}, None
    # only the inputs: a training profile also holds the model's predictions as a column
    keep = set(input_names) if input_names else set(current.columns)
    reference = DatasetProfile(
        {k: v for k, v in reference.columns.items() if k in keep and k in current.columns},
        reference.rows,
    )
    current = DatasetProfile(
        {k: v for k, v in current.columns.items() if k in reference.columns}, current.rows
    )
    try:
        report = compare(reference, current)
    except Exception as exc:  # a diagnosis must never stop a rollback
        return {"available": False, "why": f"drift comparison failed: {exc}"}, None
    columns = annotate_effects(report, reference, current)
    found = {
        "available": True,
        "against": against,
        "drifted_columns": [c["column"] for c in columns],
        "columns": columns,
    }
    return found, reference


def annotate_effects(
    report: DriftReport, reference: DatasetProfile, current: DatasetProfile
) -> list[dict[str, Any]]:
    """The drifted columns of ``report``, each with its robust effect, largest first.

    For numbers it is W₁ over :func:`~shipyard.stats.attribution.robust_scale` (the larger of
    the two sides' spreads, floored at 10⁻³ of the values' magnitude), not compare()'s
    W₁ / max(σ_ref, 0.001): a column constant in training is measured against its spread on
    the canary. Categories keep their Jensen–Shannon distance."""
    columns = []
    for c in report.columns:
        if not c.drifted:
            continue
        out = c.to_json()
        ref, cur = reference.columns[c.column], current.columns[c.column]
        if c.effect_name == "wasserstein_normalised" and ref.valid and cur.valid:
            w1 = c.effect * max(ref.std, 0.001)  # undo compare()'s standardisation
            out["robust_effect"] = robust_effect(w1, ref.std, cur.std, ref.mean, cur.mean)
        else:
            out["robust_effect"] = c.effect
        columns.append(out)
    columns.sort(key=lambda c: -float(c["robust_effect"] or 0.0))
    return columns


def rank_causes(
    predict: Callable[[np.ndarray[Any, Any]], Any],
    inputs: np.ndarray[Any, Any],
    names: Sequence[str],
    reference: DatasetProfile,
    drifted: Sequence[str],
    seed: int = 0,
) -> dict[str, Any]:
    """How much of the change in the model's predictions on ``inputs`` each drifted column
    explains: each numeric drifted column is put back to its reference distribution (values
    drawn from the reference profile's quantile sketch, one per row) and the predictions
    re-run (:func:`~shipyard.stats.attribution.explained_change`).

    ``explains`` is the prediction change that putting the column back alone undoes, as a share
    of the change that putting every drifted column back undoes; the causes are listed largest
    first. Columns that are not inputs of the model, or not numeric, are not ranked."""
    rng = np.random.default_rng(seed)
    draws: dict[int, np.ndarray[Any, Any]] = {}
    for column in drifted:
        profile = reference.columns.get(column)
        if column not in names or profile is None or profile.kind != "numeric" or not profile.valid:
            continue
        draws[list(names).index(column)] = profile.quantiles(rng.uniform(size=len(inputs)))
    if not draws:
        return {"available": False, "why": "no drifted numeric input of the model to put back"}
    total, each = explained_change(predict, inputs, draws)
    causes: list[dict[str, Any]] = [
        {
            "column": names[j],
            "prediction_change": change,
            "explains": change / total if total > 0 else 0.0,
        }
        for j, change in each.items()
    ]
    causes.sort(key=lambda c: -c["prediction_change"])
    return {"available": True, "rows": len(inputs), "total_change": total, "causes": causes}


def attribute_drift(
    s: Session,
    artifacts: ArtifactStore | None,
    registry: Registry | None,
    r: RolloutRecord,
    start: float,
    drift: dict[str, Any],
    reference: DatasetProfile | None,
) -> dict[str, Any]:
    """:func:`rank_causes` through the canary version's model on its sampled, answered inputs."""
    if not drift.get("available") or not drift.get("drifted_columns") or reference is None:
        return {"available": False, "why": "no drifted input to attribute"}
    if artifacts is None or registry is None:
        return {"available": False, "why": "no model or request log to attribute with"}
    try:
        info = registry.get(r.model, r.version)
        names = list(info.signature.names or [])
        rows: list[np.ndarray[Any, Any]] = []
        for row in _sampled_rows(s, artifacts, r, start):
            if int(row.get("status", 200)) != 200 or not row.get("request"):
                continue
            x = np.asarray(json.loads(row["request"]), dtype=float)
            if x.ndim == 2 and x.shape[1] == len(names):
                rows.append(x)
            if sum(len(b) for b in rows) >= MAX_REPLAYED_ROWS:
                break
        if not rows:
            return {"available": False, "why": "no answered canary request was sampled"}
        _, model = registry.load(r.model, version=r.version)
        # a classifier's probabilities move where its labels may not flip
        predict = getattr(model, "predict_proba", None) or model.predict
        ranked = rank_causes(predict, np.vstack(rows), names, reference, drift["drifted_columns"])
    except Exception as exc:  # a diagnosis must never stop a rollback
        return {"available": False, "why": f"attribution failed: {exc}"}
    return ranked


def _with_causes(drift: dict[str, Any], attribution: dict[str, Any]) -> dict[str, Any]:
    """The drifted columns ordered by how much of the prediction change each explains (those
    the attribution could not rank after them, by robust effect), each with its share."""
    if not attribution.get("available"):
        return drift
    by_column = {c["column"]: c for c in attribution["causes"]}
    columns = [
        {**c, **{k: v for k, v in by_column.get(c["column"], {}).items() if k != "column"}}
        for c in drift["columns"]
    ]
    columns.sort(
        key=lambda c: (-(c.get("prediction_change") or 0.0), -float(c["robust_effect"] or 0.0))
    )
    return {**drift, "columns": columns, "drifted_columns": [c["column"] for c in columns]}


def _sampled_rows(
    s: Session, artifacts: ArtifactStore, r: RolloutRecord, start: float
) -> Iterator[dict[str, Any]]:
    """The canary version's sampled request-log rows since ``start``, newest file first."""
    import pyarrow.parquet as pq

    rows = s.scalars(
        select(ArtifactRecord)
        .where(ArtifactRecord.created_at >= start - 60)
        .order_by(ArtifactRecord.created_at.desc())
    )
    files = 0
    for rec in rows:
        meta = rec.meta or {}
        if meta.get("kind") != "serving_request_log" or meta.get("model") != r.model:
            continue
        if int(meta.get("version", -1)) != r.version:
            continue
        files += 1
        if files > MAX_LOG_FILES:
            return
        try:
            table = pq.read_table(io.BytesIO(artifacts.get_bytes(rec.digest)))
        except Exception as exc:
            log.warning("cannot read request log %s: %s", rec.digest[:12], exc)
            continue
        yield from table.to_pylist()


def failing_examples(
    s: Session, artifacts: ArtifactStore | None, r: RolloutRecord, start: float
) -> list[dict[str, Any]]:
    """Up to five sampled requests the canary answered with an error, newest first."""
    if artifacts is None:
        return []
    examples: list[dict[str, Any]] = []
    for row in _sampled_rows(s, artifacts, r, start):
        if int(row.get("status", 200)) >= 400:
            examples.append(
                {k: row.get(k) for k in ("request_id", "ts", "status", "request", "response")}
            )
            if len(examples) >= MAX_EXAMPLES:
                break
    return examples


def disagreements(
    s: Session,
    artifacts: ArtifactStore | None,
    registry: Registry | None,
    r: RolloutRecord,
    start: float,
) -> dict[str, Any]:
    """The stable version re-run on the canary's sampled, answered inputs: how often and where
    the two versions disagree (a canary can fail on its predictions without a single error)."""
    if artifacts is None or registry is None or r.stable_version is None:
        return {"available": False, "why": "no stable version or no request log to replay"}
    try:
        _, stable = registry.load(r.model, version=r.stable_version)
        checked = differ = 0
        examples: list[dict[str, Any]] = []
        for row in _sampled_rows(s, artifacts, r, start):
            if int(row.get("status", 200)) != 200 or not row.get("request"):
                continue
            x = np.asarray(json.loads(row["request"]), dtype=float)
            canary = np.asarray(json.loads(row["response"])).reshape(len(x), -1)[:, 0]
            baseline = np.asarray(stable.predict(x)).reshape(len(x), -1)[:, 0]
            for i in range(len(x)):
                checked += 1
                if _same(canary[i], baseline[i]):
                    continue
                differ += 1
                if len(examples) < MAX_EXAMPLES:
                    examples.append(
                        {
                            "request_id": row.get("request_id"),
                            "row": i,
                            "canary": _plain(canary[i]),
                            "stable": _plain(baseline[i]),
                        }
                    )
            if checked >= MAX_REPLAYED_ROWS:
                break
    except Exception as exc:  # a diagnosis must never stop a rollback
        return {"available": False, "why": f"replay on the stable version failed: {exc}"}
    if checked == 0:
        return {"available": False, "why": "no answered canary request was sampled"}
    return {
        "available": True,
        "stable_version": r.stable_version,
        "rows": checked,
        "disagree": differ,
        "share": differ / checked,
        "examples": examples,
    }


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(np.isclose(float(a), float(b), rtol=1e-6, atol=1e-9))
    except (TypeError, ValueError):
        return str(a) == str(b)


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


PENDING = "pending"
COMPLETE = "complete"
NOT_YET = {"available": False, "why": "the diagnosis is still running"}


@dataclass
class Diagnoser:
    """The rollout engine's diagnosis: opened with the rollback, completed after it.

    :meth:`open` writes the report's cheap part (the failed metrics, the window) marked
    ``pending``, inside the transaction that reverts the traffic; :meth:`complete` reads the
    serving windows, the request log and replays the stable model afterwards, then fills the
    report in (once: a second completer finds it complete and does nothing).
    """

    store: Store
    artifacts: ArtifactStore | None = None
    registry: Registry | None = None

    def open(
        self,
        s: Session,
        r: RolloutRecord,
        verdicts: Sequence[MetricVerdict],
        now: float,
        replay: dict[str, Any] | None = None,
    ) -> int:
        if replay is not None:
            return self._replayed(s, r, verdicts, now, replay)
        start = r.step_started_at or r.created_at
        report: dict[str, Any] = {
            "status": PENDING,
            "model": r.model,
            "version": r.version,
            "stable_version": r.stable_version,
            "step": r.step_index,
            "window": [start, now],
            "failed_metrics": [v.to_dict() for v in verdicts if v.outcome == "fail"],
            "all_metrics": [v.to_dict() for v in verdicts],
            "drifting_inputs": NOT_YET,
            "drift_attribution": NOT_YET,
            "failing_requests": [],
            "disagreements": NOT_YET,
        }
        row = Diagnosis(rollout_id=r.id, model=r.model, version=r.version, report=report, ts=now)
        s.add(row)
        s.flush()
        return row.id

    def _replayed(
        self,
        s: Session,
        r: RolloutRecord,
        verdicts: Sequence[MetricVerdict],
        now: float,
        replay: dict[str, Any],
    ) -> int:
        """A failed replay's (or shadow's) report, complete at once: the candidate answered no
        user, so there are no serving windows to read; the stage's own rows are the evidence
        (where it answers differently than the stable version did, and where it failed)."""
        stage = str(replay.get("stage", {}).get("kind", "replay"))
        nothing = {"available": False, "why": f"the candidate answered no user (failed at {stage})"}
        rows = int(replay.get("rows") or 0)
        report: dict[str, Any] = {
            "status": COMPLETE,
            "stage": stage,
            "model": r.model,
            "version": r.version,
            "stable_version": r.stable_version,
            "step": None,
            "window": [replay.get("since", now), now],
            "failed_metrics": [v.to_dict() for v in verdicts if v.outcome == "fail"],
            "all_metrics": [v.to_dict() for v in verdicts],
            "replay": replay,
            "drifting_inputs": nothing,
            "drift_attribution": nothing,
            "failing_requests": list(replay.get("error_examples", [])),
            "disagreements": {
                "available": rows > 0,
                "stable_version": r.stable_version,
                "rows": rows,
                "disagree": int(replay.get("changed") or 0),
                "share": float(replay.get("changed_share") or 0.0),
                "examples": list(replay.get("examples", [])),
                "source": f"the stable version's recorded answers ({stage})",
            },
        }
        row = Diagnosis(rollout_id=r.id, model=r.model, version=r.version, report=report, ts=now)
        s.add(row)
        s.flush()
        return row.id

    def pending(self) -> list[int]:
        with self.store.session() as s:
            return list(
                s.scalars(
                    select(Diagnosis.id)
                    .where(Diagnosis.report["status"].as_string() == PENDING)
                    .order_by(Diagnosis.id)
                )
            )

    def complete(self, diagnosis_id: int) -> dict[str, Any] | None:
        with self.store.session() as s:  # reads only: no write lock while the replay runs
            row = s.get(Diagnosis, diagnosis_id)
            rollout = s.get(RolloutRecord, row.rollout_id) if row is not None else None
            if row is None or rollout is None or row.report.get("status") != PENDING:
                return None
            start, end = row.report["window"]
            drift, reference = _drift(s, rollout, start, end, self.registry)
            examples = failing_examples(s, self.artifacts, rollout, start)
            replay = disagreements(s, self.artifacts, self.registry, rollout, start)
            causes = attribute_drift(
                s, self.artifacts, self.registry, rollout, start, drift, reference
            )
        drift = _with_causes(drift, causes)
        found = {
            "drifting_inputs": drift,
            "failing_requests": examples,
            "disagreements": replay,
            "drift_attribution": causes,
        }
        with self.store.session(immediate=True) as s:
            row = s.get(Diagnosis, diagnosis_id, with_for_update=True, populate_existing=True)
            if row is None or row.report.get("status") != PENDING:
                return None
            row.report = {**row.report, **found, "status": COMPLETE}
            failed = [f["metric"] for f in row.report["failed_metrics"]]
        return {
            "diagnosis_id": diagnosis_id,
            "failed": failed,
            "drifted_columns": drift.get("drifted_columns", []),
            "failing_requests": len(examples),
        }


def diagnosis_of(s: Session, rollout_id: str) -> dict[str, Any] | None:
    row = s.scalar(
        select(Diagnosis).where(Diagnosis.rollout_id == rollout_id).order_by(Diagnosis.id.desc())
    )
    return dict(row.report) if row is not None else None
