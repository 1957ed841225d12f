"""The readiness items: what is checked, for which subject, which ML Test Score test (or which
line of Shipyard's guidance) it feeds, and which check judges it from the facts.

Each item is judged per subject of its scope (each data pipeline, each model, the workspace…).
A judgement is pass, fail or unknown, with the evidence it rests on (what was found, and when)
and, for a fail, the exact command that fixes it (:mod:`~shipyard.readiness.verdicts`). When a
scope has no subject at all (an empty workspace has no pipeline), the item fails once, with the
command that creates one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shipyard.readiness import model_checks as models
from shipyard.readiness import pipeline_checks as pipelines
from shipyard.readiness import workspace_checks as workspace
from shipyard.readiness.evidence import Facts
from shipyard.readiness.verdicts import Judge, Scope, Subject


@dataclass(frozen=True)
class Item:
    key: str
    title: str
    scope: Scope
    tests: tuple[str, ...]
    """The ML Test Score tests it feeds (``Data 1``…); empty: a line of the guidance only."""
    guidance: str
    judge: Judge
    none_fix: str = ""
    """The fix when the scope has no subject at all."""


RUN_DATA = "shipyard run DATA_PIPELINE.py   # a Pipeline(kind='data') whose steps call observe()"
RUN_TRAINING = (
    "shipyard run TRAINING.py   # a Pipeline(kind='training') that calls register_model()"
)
RUN_VALIDATION = (
    "shipyard run VALIDATION.py   # a Pipeline(kind='validation') that observes its test set"
)
REGISTER = "shipyard models register MODEL MODEL_FILE --training-data TRAIN.parquet"

ITEMS: tuple[Item, ...] = (
    Item(
        "data.schema",
        "Data sets have a schema",
        "data",
        ("Data 1",),
        "schema and monitors exist for each data set",
        pipelines.schema,
        RUN_DATA,
    ),
    Item(
        "data.invariants",
        "Data-type problems checked and alerted",
        "data",
        ("Monitor 2",),
        "data-type problems (missing, corrupted values)",
        pipelines.invariants,
        RUN_DATA,
    ),
    Item(
        "data.feature_drift",
        "Feature drift monitored and alerted",
        "data",
        ("Monitor 1",),
        "skew/drift of feature values",
        pipelines.feature_drift,
        RUN_DATA,
    ),
    Item(
        "data.label_drift",
        "Label drift monitored and alerted",
        "data",
        ("Monitor 1",),
        "skew/drift of label values",
        pipelines.label_drift,
        RUN_DATA,
    ),
    Item(
        "pipeline.cost",
        "Resources declared and usage measured",
        "pipeline",
        ("Data 3",),
        "the right hardware: steps declare what they need, usage is measured",
        pipelines.cost,
        RUN_DATA,
    ),
    Item(
        "pipeline.quota",
        "A member of a quota pool",
        "pipeline",
        (),
        "enough quota for every pipeline",
        pipelines.quota_member,
        RUN_DATA,
    ),
    Item(
        "training.time",
        "Training time monitored and alerted",
        "training",
        ("Monitor 6",),
        "training time",
        pipelines.training_time,
        RUN_TRAINING,
    ),
    Item(
        "training.failures",
        "Training failures monitored and alerted",
        "training",
        (),
        "training failures",
        pipelines.training_failures,
        RUN_TRAINING,
    ),
    Item(
        "training.automated",
        "Training → validation → deploy automated",
        "training",
        ("Infra 3",),
        "validation and deployment automated after training",
        pipelines.automated,
        RUN_TRAINING,
    ),
    Item(
        "validation.test_set_drift",
        "Test-set drift checked and alerted",
        "validation",
        (),
        "skew/drift of the test data sets",
        pipelines.test_set_drift,
        RUN_VALIDATION,
    ),
    Item(
        "model.lineage",
        "Lineage to its run, code and data",
        "model",
        ("Infra 1", "Model 1"),
        "a model's lineage to its data and code",
        models.lineage,
        REGISTER,
    ),
    Item(
        "model.review",
        "Four-eyes approval before serving",
        "model",
        ("Model 1",),
        "which approvals are required",
        models.review,
        REGISTER,
    ),
    Item(
        "model.online_offline",
        "Online quality measured against offline",
        "model",
        ("Model 2",),
        "model quality with late labels",
        models.online_offline,
        REGISTER,
    ),
    Item(
        "model.baseline",
        "Gate compares with a baseline",
        "model",
        ("Model 5",),
        "a validation gate with a baseline comparison",
        models.baseline,
        REGISTER,
    ),
    Item(
        "model.smoke",
        "Staging smoke check passed",
        "model",
        ("Infra 2",),
        "where it is deployed (staging)",
        models.smoke,
        REGISTER,
    ),
    Item(
        "model.gate",
        "Validation gate required and passed",
        "model",
        ("Infra 4",),
        "validation automated after training",
        models.gate,
        REGISTER,
    ),
    Item(
        "model.debuggable",
        "Requests logged and windows flushed",
        "model",
        ("Infra 5",),
        "logs structured and correlated (request id, model version)",
        models.debuggable,
        REGISTER,
    ),
    Item(
        "model.canary",
        "Canary steps judged",
        "model",
        ("Infra 6",),
        "rolled out to a subset of users, judged statistically",
        models.canary,
        REGISTER,
    ),
    Item(
        "model.rollback",
        "Rollback done or rehearsed recently",
        "model",
        ("Infra 7",),
        "how to roll back; any production model rolled back by one command",
        models.rollback,
        REGISTER,
    ),
    Item(
        "model.skew",
        "Serving skew against training data",
        "model",
        ("Monitor 3",),
        "skew/drift of serving inputs vs training data",
        models.skew,
        REGISTER,
    ),
    Item(
        "model.staleness",
        "Serving version not stale",
        "model",
        ("Monitor 4",),
        "models refreshed",
        models.staleness,
        REGISTER,
    ),
    Item(
        "model.numeric",
        "Bad serving input checked and alerted",
        "model",
        ("Monitor 5",),
        "data-type problems of serving inputs",
        models.numeric,
        REGISTER,
    ),
    Item(
        "model.latency",
        "Latency monitored and alerted",
        "model",
        ("Monitor 6",),
        "latency (how long a prediction takes)",
        models.latency,
        REGISTER,
    ),
    Item(
        "model.quality",
        "Prediction drift and quality alerted",
        "model",
        ("Monitor 7",),
        "skew/drift of predictions; model quality",
        models.quality,
        REGISTER,
    ),
    Item(
        "model.outage",
        "Outage probed, alerted and drilled",
        "model",
        (),
        "outage (the model stopped answering)",
        models.outage,
        REGISTER,
    ),
    Item(
        "model.policy",
        "Deployment policy documented",
        "model",
        (),
        "a documented deployment: approvals, how, where, on failure, rollback",
        models.policy,
        REGISTER,
    ),
    Item(
        "model.lead_time",
        "Registered to production quickly",
        "model",
        ("Data 6",),
        "validation and deployment automated after training",
        models.lead_time,
        REGISTER,
    ),
    Item(
        "alerts.delivery",
        "Every routed receiver delivered recently",
        "workspace",
        ("Monitor 1",),
        "alerts that reach people",
        workspace.delivery,
    ),
    Item(
        "alerts.drilled",
        "A drift alert proven to reach a receiver",
        "workspace",
        ("Monitor 1",),
        "alerts that reach people (proven by a drill)",
        workspace.drift_drilled,
    ),
    Item(
        "quota.plan",
        "Schedules fit with experiment headroom",
        "workspace",
        (),
        "enough quota for every schedule, with headroom for experiments",
        workspace.plan,
    ),
    Item(
        "quota.capped",
        "No pipeline may take a whole shared pool",
        "workspace",
        (),
        "shared quota watched so no errant pipeline takes it all",
        workspace.capped,
    ),
    Item(
        "quota.exhaustion",
        "Quota exhaustion alerted and drilled",
        "workspace",
        (),
        "quota limit about to be reached",
        workspace.exhaustion,
    ),
)

BY_KEY = {item.key: item for item in ITEMS}


def subjects(facts: Facts, scope: Scope) -> Iterable[Subject]:
    """The subjects an item of ``scope`` is judged for."""
    if scope == "workspace":
        return [None]
    if scope == "model":
        return list(facts.models)
    if scope == "pipeline":
        return list(facts.pipelines)
    return [p for p in facts.pipelines if p.kind == scope]
