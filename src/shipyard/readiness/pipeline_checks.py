"""The checks of pipelines: data sets with a schema, their monitors on and alerted, declared
and measured resources, a quota pool, training that ends in a validated rollout.
"""

from __future__ import annotations

import shlex

from shipyard.readiness.evidence import Facts
from shipyard.readiness.verdicts import (
    DRIFT_METRICS,
    PIPELINE_FILE,
    Evidence,
    Subject,
    Verdict,
    failed,
    monitored,
    passed,
    pipeline_of,
)


def schema(facts: Facts, subject: Subject) -> Verdict:
    p = pipeline_of(subject)
    if not p.datasets:
        return failed(
            f"shipyard run {shlex.quote(p.file or PIPELINE_FILE)}   # with a step that calls "
            "observe(NAME, frame, role='reference')",
            Evidence(f"{p.name} has published no data set"),
        )
    missing = [d for d in p.datasets if not d.schema_columns]
    found = [
        Evidence(
            f"{d.name}: reference from {d.reference_pipeline}, "
            f"schema of {d.schema_columns} columns",
            d.reference_at,
        )
        for d in p.datasets
        if d.schema_columns
    ]
    if missing:
        names = ", ".join(d.name for d in missing)
        return failed(
            f"shipyard run {shlex.quote(p.file or PIPELINE_FILE)}   # publish the reference of "
            f"{names} with observe(..., role='reference')",
            *found,
            Evidence(f"no reference schema for {names}"),
        )
    return passed(*found)


def invariants(facts: Facts, subject: Subject) -> Verdict:
    return monitored(
        facts, pipeline_of(subject), "data_problems", ("shipyard_data_problem_fraction",),
        "DataQuality",
    )  # fmt: skip


def feature_drift(facts: Facts, subject: Subject) -> Verdict:
    return monitored(facts, pipeline_of(subject), "feature_drift", DRIFT_METRICS, "DataDrift")


def label_drift(facts: Facts, subject: Subject) -> Verdict:
    return monitored(facts, pipeline_of(subject), "label_drift", DRIFT_METRICS, "DataDrift")


def cost(facts: Facts, subject: Subject) -> Verdict:
    p = pipeline_of(subject)
    if not p.declared:
        return failed(
            f"shipyard run {shlex.quote(p.file or PIPELINE_FILE)}   # after giving every step "
            "@step(resources=Resources(cpu=…, memory=…))",
            Evidence(f"the last run of {p.name} has steps without declared resources"),
        )
    if p.measured_at is None:
        return failed(
            f"shipyard run {shlex.quote(p.file or PIPELINE_FILE)}",
            Evidence(f"no measured usage of {p.name} on record"),
        )
    return passed(
        Evidence(f"every step of {p.name}'s last run declared its resources"),
        Evidence("usage measured (CPU seconds, peak memory)", p.measured_at),
    )


def quota_member(facts: Facts, subject: Subject) -> Verdict:
    p = pipeline_of(subject)
    if p.member_of:
        return passed(Evidence(f"{p.name} is a member of pool {', '.join(p.member_of)}"))
    used = f" (its runs used {', '.join(p.pools_used)} as a stranger)" if p.pools_used else ""
    return failed(
        "shipyard quota apply pools.yaml   # with "
        f"{{pipeline: {p.name}, share: …, cap: …}} among a pool's members",
        Evidence(f"no pool names {p.name} as a member{used}"),
    )


# -- training and validation pipelines ---------------------------------------------------------


def training_time(facts: Facts, subject: Subject) -> Verdict:
    return monitored(
        facts, pipeline_of(subject), "training_time", ("shipyard_training_duration_ratio",),
        "TrainingSlow",
    )  # fmt: skip


def training_failures(facts: Facts, subject: Subject) -> Verdict:
    return monitored(
        facts, pipeline_of(subject), "training_failures", ("shipyard_run_failed",), "TrainingFailed"
    )


def automated(facts: Facts, subject: Subject) -> Verdict:
    p = pipeline_of(subject)
    if not p.trained:
        return failed(
            f"shipyard run {shlex.quote(p.file or PIPELINE_FILE)}   # with a step ending in "
            "register_model(...) then validate_and_deploy(...)",
            Evidence(f"no run of {p.name} registered a model version"),
        )
    for m in facts.models:
        for model, version in p.trained:
            if m.name != model:
                continue
            gated = [g for g in m.gates if g.version == version]
            rolled = [r for r in m.rollouts if r.version == version]
            if gated and rolled:
                return passed(
                    Evidence(f"a run of {p.name} registered {model} v{version}"),
                    Evidence(f"validation gate {'passed' if gated[-1].passed else 'failed'}",
                             gated[-1].at),
                    Evidence(f"rollout {rolled[-1].id} ({rolled[-1].state})",
                             rolled[-1].created_at),
                )  # fmt: skip
    model, version = p.trained[-1]
    return failed(
        f"shipyard run {shlex.quote(p.file or PIPELINE_FILE)} --param deploy=true   # the step "
        "calls validate_and_deploy(...) after register_model(...)",
        Evidence(f"{p.name} registered {model} v{version}, but no version of it went through "
                 "the gate into a rollout"),
    )  # fmt: skip


def test_set_drift(facts: Facts, subject: Subject) -> Verdict:
    return monitored(facts, pipeline_of(subject), "test_set_drift", DRIFT_METRICS, "DataDrift")
