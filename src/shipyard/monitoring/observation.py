"""The step side of monitoring: a step publishes a data set with one call.

    from shipyard.monitoring import observe

    observe("features", train, role="reference", label="target")   # the data it learns from
    observe("features", batch, role="current", label="target")     # the data it is given now

A ``reference`` is profiled (:class:`~shipyard.stats.DatasetProfile`) and its schema inferred;
both are kept. A ``current`` data set is profiled on the latest reference's bins (same data set
name, of this pipeline or of ``reference_pipeline``) and judged by the pipeline's enabled data
set monitors (feature drift, label drift, data-type problems, test-set drift). The profile
(an artifact), its row, the findings and the metric points are written in one transaction.

Inside a step the run, pipeline and step come from the step's context; outside a step (a
notebook, a script) name the ``pipeline``: the workspace of the current settings is used.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from shipyard.artifacts import ArtifactStore
from shipyard.checks import Check
from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.errors import InvalidInput, NotFound
from shipyard.monitoring.config import MonitorSet
from shipyard.monitoring.data import data_problems, feature_drift, label_drift
from shipyard.monitoring.estimation import performance_estimation
from shipyard.monitoring.findings import add_checks
from shipyard.monitoring.multivariate import (
    SAMPLE_MEDIA_TYPE,
    multivariate_drift,
    reference_sample,
)
from shipyard.monitoring.settings import monitors_of, stored_settings
from shipyard.monitoring.validation import drift_of_test_set
from shipyard.stats import DatasetProfile, Schema, infer_schema
from shipyard.statuses import CheckStatus
from shipyard.store import Store
from shipyard.store.monitoring import MonitorProfile
from shipyard.store.tables import PipelineRecord, Run

Role = Literal["reference", "current"]
PROFILE_MEDIA_TYPE = "application/vnd.shipyard.profile+json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


@dataclass
class Observation:
    """What :func:`observe` recorded: the profile's row and the monitors' verdicts."""

    pipeline: str
    dataset: str
    role: str
    rows: int
    profile_id: int
    reference_id: int | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def flagged(self) -> list[Check]:
        """The checks whose status is not ``ok``."""
        return [c for c in self.checks if c.status != CheckStatus.OK]


def observe(
    dataset: str,
    frame: Any,
    *,
    role: Role = "current",
    label: str | None = None,
    reference_pipeline: str | None = None,
    pipeline: str | None = None,
    prediction: str | None = None,
) -> Observation:
    """Publish ``frame`` (pandas or Arrow) as data set ``dataset`` of the running pipeline.

    ``label`` names the label column (label drift is judged on it, feature drift on the rest);
    ``reference_pipeline`` takes the reference from another pipeline (the data pipeline that
    published the training set); ``pipeline`` is needed only outside a step. ``prediction``
    names a column holding a regressor's predictions: a reference with it and a numeric label
    lets later batches have their loss estimated before labels arrive
    (:mod:`shipyard.monitoring.estimation`).
    """
    from shipyard.pipelines import context

    ctx = context.current()
    if ctx is not None:
        if pipeline is not None and pipeline != ctx.pipeline:
            raise InvalidInput(
                f"observe inside a step of {ctx.pipeline!r} cannot name {pipeline!r}"
            )
        store, artifacts = ctx.store, ctx.artifacts
        with store.session() as s:
            run = s.get(Run, ctx.run_id)
            if run is not None:
                monitors = monitors_of(s, run)
            else:
                monitors = stored_settings(s, ctx.pipeline, "data")
        return publish(
            store,
            artifacts,
            SYSTEM_CLOCK,
            monitors,
            ctx.pipeline,
            dataset,
            frame,
            role=role,
            label=label,
            reference_pipeline=reference_pipeline,
            run_id=ctx.run_id,
            step=ctx.step,
            prediction=prediction,
        )
    if pipeline is None:
        raise InvalidInput("observe outside a pipeline step needs pipeline=NAME")
    from shipyard.workspace import Workspace

    ws = Workspace.open()
    with ws.store.session() as s:
        record = s.get(PipelineRecord, pipeline)
        if record is None:
            raise NotFound("pipeline", pipeline, "run it once, or see `shipyard pipelines list`")
        monitors = stored_settings(s, pipeline, record.kind)
    return publish(
        ws.store,
        ws.artifacts,
        ws.clock,
        monitors,
        pipeline,
        dataset,
        frame,
        role=role,
        label=label,
        reference_pipeline=reference_pipeline,
        prediction=prediction,
    )


def latest_reference(session: Session, pipeline: str, dataset: str) -> MonitorProfile | None:
    """The newest reference of ``dataset`` that ``pipeline`` published."""
    return session.scalars(
        select(MonitorProfile)
        .where(
            MonitorProfile.pipeline == pipeline,
            MonitorProfile.dataset == dataset,
            MonitorProfile.role == "reference",
        )
        .order_by(MonitorProfile.ts.desc(), MonitorProfile.id.desc())
        .limit(1)
    ).first()


def _reference_pipeline(monitors: MonitorSet, pipeline: str, given: str | None) -> str:
    if given:
        return given
    for name in ("feature_drift", "test_set_drift", "label_drift", "data_problems"):
        if monitors.enabled(name) and monitors.get(name).options.get("reference_pipeline"):
            return str(monitors.get(name).options["reference_pipeline"])
    return pipeline


def _check_input(
    dataset: str, frame: Any, role: str, label: str | None, prediction: str | None = None
) -> None:
    if role not in ("reference", "current"):
        raise InvalidInput(f"role must be 'reference' or 'current', not {role!r}")
    if not isinstance(dataset, str) or not _NAME.fullmatch(dataset):
        raise InvalidInput(f"data set name {dataset!r}: use letters, digits, '.', '_' or '-'")
    columns = getattr(frame, "columns", None)
    if columns is None:
        raise InvalidInput(f"observe needs a pandas DataFrame or an Arrow table, not {frame!r:.80}")
    names = [str(c) for c in (frame.column_names if hasattr(frame, "column_names") else columns)]
    if label is not None and label not in names:
        raise InvalidInput(f"label column {label!r} is not in {dataset} ({len(names)} columns)")
    if prediction is not None and prediction not in names:
        raise InvalidInput(f"prediction column {prediction!r} is not in {dataset}")
    if prediction is not None and prediction == label:
        raise InvalidInput("the prediction and the label must be different columns")
    if len(frame) == 0:
        raise InvalidInput(f"data set {dataset} has no rows")


def publish(
    store: Store,
    artifacts: ArtifactStore,
    clock: Clock,
    monitors: MonitorSet,
    pipeline: str,
    dataset: str,
    frame: Any,
    *,
    role: str = "current",
    label: str | None = None,
    reference_pipeline: str | None = None,
    run_id: str | None = None,
    step: str | None = None,
    prediction: str | None = None,
) -> Observation:
    """Profile ``frame``, judge it when it is ``current``, and record everything in one
    transaction (what :func:`observe` does once it knows where it runs)."""
    _check_input(dataset, frame, role, label, prediction)
    frame = _label_as_category(frame, label)
    checks: list[Check] = []
    reference_row: MonitorProfile | None = None
    schema: dict[str, Any] = {}
    sample: dict[str, Any] | None = None
    if role == "reference":
        profile = DatasetProfile.from_frame(frame)
        schema = infer_schema(frame).to_json()
        sample = reference_sample(monitors, frame, label, prediction)
    else:
        source = _reference_pipeline(monitors, pipeline, reference_pipeline)
        with store.session() as s:
            reference_row = latest_reference(s, source, dataset)
        if reference_row is None:
            profile = DatasetProfile.from_frame(frame)
            checks = [
                Check.of_pipeline(
                    name,
                    pipeline,
                    CheckStatus.WARNING,
                    f"no reference of {dataset} from pipeline {source!r} yet: nothing to compare",
                    dataset,
                    run_id,
                )
                for name in _dataset_monitors(monitors)
            ]
        else:
            reference = DatasetProfile.from_json(
                json.loads(artifacts.get_bytes(reference_row.profile_digest))
            )
            profile = DatasetProfile.from_frame(frame, reference=reference)
            if label is None and reference_row.label is not None:
                label = reference_row.label  # the reference knows which column the label is
                frame = _label_as_category(frame, label)
            checks = _judge(
                monitors, pipeline, dataset, frame, reference, profile, label, reference_row.schema
            )
            if reference_row.sample_digest is not None:
                kept = json.loads(artifacts.get_bytes(reference_row.sample_digest))
                checks += _judge_sample(monitors, pipeline, dataset, frame, kept)
            seen_reference = {
                "pipeline": reference_row.pipeline,
                "run_id": reference_row.run_id,
                "profile_id": reference_row.id,
            }
            checks = [
                replace(c, run_id=run_id, evidence={**c.evidence, "reference": seen_reference})
                for c in checks
            ]
    data = json.dumps(profile.to_json(), separators=(",", ":")).encode()
    now = clock.time()
    with store.session(immediate=True) as s:
        ref = artifacts.put_bytes(
            data, PROFILE_MEDIA_TYPE, {"dataset": dataset, "rows": profile.rows}, session=s
        )
        sample_digest = None
        if sample is not None:
            sample_digest = artifacts.put_bytes(
                json.dumps(sample, separators=(",", ":")).encode(),
                SAMPLE_MEDIA_TYPE,
                {"dataset": dataset, "rows": len(sample["rows"])},
                session=s,
            ).digest
        row = MonitorProfile(
            pipeline=pipeline,
            dataset=dataset,
            role=role,
            run_id=run_id,
            step=step,
            label=label,
            rows=profile.rows,
            profile_digest=ref.digest,
            schema=schema,
            ts=now,
            sample_digest=sample_digest,
        )
        s.add(row)
        add_checks(s, checks, now)
        s.flush()
        profile_id = row.id
    return Observation(
        pipeline,
        dataset,
        role,
        profile.rows,
        profile_id,
        reference_row.id if reference_row is not None else None,
        checks,
    )


def _label_as_category(frame: Any, label: str | None) -> Any:
    """Class labels (integers, booleans, strings) are categories, compared by their frequencies
    (chi-square and Jensen–Shannon), not as numbers on a line; float labels (a regression's
    target) stay numeric."""
    import pandas as pd

    if label is None or not isinstance(frame, pd.DataFrame) or label not in frame.columns:
        return frame
    column = frame[label]
    if pd.api.types.is_float_dtype(column.dtype):
        return frame
    return frame.assign(**{label: column.astype("string")})


def _judge_sample(
    monitors: MonitorSet, pipeline: str, dataset: str, frame: Any, sample: dict[str, Any]
) -> list[Check]:
    """The monitors that read the reference's sampled rows (multivariate drift, DLE)."""
    found: list[Check | None] = []
    if monitors.enabled("multivariate_drift"):
        spec = monitors.get("multivariate_drift")
        found.append(multivariate_drift(spec, pipeline, dataset, sample, frame))
    if monitors.enabled("performance_estimation"):
        spec = monitors.get("performance_estimation")
        found.append(performance_estimation(spec, pipeline, dataset, sample, frame))
    return [c for c in found if c is not None]


def _dataset_monitors(monitors: MonitorSet) -> list[str]:
    order = ("feature_drift", "label_drift", "test_set_drift", "data_problems")
    return [name for name in order if monitors.enabled(name)]


def _judge(
    monitors: MonitorSet,
    pipeline: str,
    dataset: str,
    frame: Any,
    reference: DatasetProfile,
    current: DatasetProfile,
    label: str | None,
    schema: dict[str, Any],
) -> list[Check]:
    checks: list[Check] = []
    for name in _dataset_monitors(monitors):
        spec = monitors.get(name)
        if name == "feature_drift":
            checks.append(feature_drift(spec, pipeline, dataset, reference, current, label))
        elif name == "label_drift":
            checks.append(label_drift(spec, pipeline, dataset, reference, current, label))
        elif name == "test_set_drift":
            checks.append(drift_of_test_set(spec, pipeline, dataset, reference, current))
        elif name == "data_problems":
            if schema:
                checks.append(
                    data_problems(spec, pipeline, dataset, frame, Schema.from_json(schema), label)
                )
            else:
                checks.append(
                    Check.of_pipeline(
                        name,
                        pipeline,
                        CheckStatus.WARNING,
                        f"the reference of {dataset} has no schema",
                        dataset,
                    )
                )
    return checks
