"""The readiness items: what is checked, for which subject, which ML Test Score test (or which
line of Shipyard's guidance) it feeds, and how it is judged from the facts.

Each item is judged per subject of its scope (each data pipeline, each model, the workspace…).
A judgement is pass, fail or unknown, with the evidence it rests on (what was found, and when)
and, for a fail, the exact command that fixes it. When a scope has no subject at all (an empty
workspace has no pipeline), the item fails once, with the command that creates one.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from shipyard.alerting.rules import Rule
from shipyard.readiness.evidence import Facts, ModelFacts, PipelineFacts, Seen

Status = Literal["pass", "fail", "unknown"]
Scope = Literal["data", "training", "validation", "pipeline", "model", "workspace"]

DAY_S = 86400.0
DRILL_MAX_AGE_S = 30 * DAY_S
"""A drill older than this no longer counts: systems change, and so do receivers."""
ROLLBACK_MAX_AGE_S = 30 * DAY_S
DELIVERY_MAX_AGE_S = 7 * DAY_S
"""A receiver proves itself by a delivery within this span."""
STALE_AFTER_S = 30 * DAY_S
LEAD_TIME_S = 7 * DAY_S

DRILL_KINDS = ("drift", "outage", "rollback", "quota")
"""The drills of :mod:`shipyard.readiness.drills`, whose records the items read."""
DRIFT_METRICS = ("shipyard_drift_score", "shipyard_dataset_drift_share")
QUOTA_METRICS = (
    "shipyard_quota_used_fraction",
    "shipyard_quota_pool_reserved",
    "shipyard_quota_time_to_exhaustion_seconds",
)
PIPELINE_FILE = "pipelines/PIPELINE.py"


@dataclass(frozen=True)
class Evidence:
    what: str
    at: float | None = None


@dataclass(frozen=True)
class Verdict:
    status: Status
    evidence: tuple[Evidence, ...]
    fix: str | None = None
    """The command that fixes a fail (with what to put in the file it names, if any)."""


Subject = PipelineFacts | ModelFacts | None
Judge = Callable[[Facts, Subject], Verdict]


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


# -- helpers -----------------------------------------------------------------------------------


def _pass(*evidence: Evidence) -> Verdict:
    return Verdict("pass", tuple(evidence))


def _fail(fix: str, *evidence: Evidence) -> Verdict:
    return Verdict("fail", tuple(evidence), fix)


def _unknown(*evidence: Evidence) -> Verdict:
    return Verdict("unknown", tuple(evidence))


def _pipeline(subject: Subject) -> PipelineFacts:
    assert isinstance(subject, PipelineFacts)
    return subject


def _model(subject: Subject) -> ModelFacts:
    assert isinstance(subject, ModelFacts)
    return subject


def _rules(facts: Facts, metrics: Sequence[str]) -> tuple[list[Rule], Evidence]:
    rules = facts.alerting.rules_on(*metrics)
    if facts.alerting.config is None:
        return [], Evidence(f"alerting configuration unreadable: {facts.alerting.error}")
    if rules:
        names = ", ".join(sorted({r.name for r in rules}))
        return rules, Evidence(f"alert rules on {'/'.join(metrics)}: {names}")
    return [], Evidence(f"no enabled alert rule reads {' or '.join(metrics)}")


def _rule_fix(name: str) -> str:
    return (
        f"shipyard alerts rules   # then switch {name} on in alerting.yaml "
        f"(defaults: {{{name}: true}}) and restart `shipyard daemon`"
    )


def _monitor_fix(p: PipelineFacts, monitor: str) -> str:
    return (
        f"shipyard run {shlex.quote(p.file or PIPELINE_FILE)}   # after setting "
        f'Pipeline("{p.name}", monitors={{"{monitor}": True}}) in the file'
    )


def _monitored(
    facts: Facts, p: PipelineFacts, monitor: str, metrics: Sequence[str], rule: str
) -> Verdict:
    """A pipeline monitor that is on, has judged something, and has a rule that alerts on it."""
    if not p.monitors.get(monitor, False):
        return _fail(_monitor_fix(p, monitor), Evidence(f"monitor {monitor} of {p.name} is off"))
    seen = p.findings.get(monitor)
    if seen is None:
        return _fail(
            f"shipyard run {shlex.quote(p.file or PIPELINE_FILE)}   # a run whose step publishes "
            "with observe(..., role='current')",
            Evidence(f"monitor {monitor} is on but has judged nothing yet"),
        )
    rules, about = _rules(facts, metrics)
    found = Evidence(f"{monitor}: {seen.status}, {seen.summary}", seen.at)
    if not rules:
        return _fail(_rule_fix(rule), found, about)
    return _pass(found, about)


def _seen(m: ModelFacts, monitor: str) -> Seen | None:
    return m.findings.get(monitor)


def _serving_check(
    facts: Facts, m: ModelFacts, monitor: str, metrics: Sequence[str], rule: str
) -> Verdict:
    seen = _seen(m, monitor)
    if seen is None:
        return _fail(
            f"shipyard monitors serving {m.name} --url URL   # or keep `shipyard daemon` running "
            "beside `shipyard serve`",
            Evidence(f"no {monitor} verdict on {m.name} yet"),
        )
    rules, about = _rules(facts, metrics)
    found = Evidence(f"{monitor}: {seen.status}, {seen.summary}", seen.at)
    if not rules:
        return _fail(_rule_fix(rule), found, about)
    return _pass(found, about)


def _drilled(facts: Facts, kind: str, subject: str | None, command: str) -> Verdict:
    drill = facts.last_drill(kind, subject)
    where = f" of {subject}" if subject else ""
    if drill is None:
        return _fail(command, Evidence(f"no {kind} drill{where} on record"))
    age = facts.now - drill.ended_at
    took = ", ".join(f"{k} {v:.1f} s" for k, v in drill.signals.items())
    seen = Evidence(
        f"{kind} drill{where} {'passed' if drill.passed else 'failed'}"
        + (f": {drill.reason}" if drill.reason else "")
        + (f" ({took})" if took else ""),
        drill.ended_at,
    )
    if not drill.passed:
        return _fail(command, seen)
    if age > DRILL_MAX_AGE_S:
        return _fail(command, seen, Evidence(f"older than {DRILL_MAX_AGE_S / DAY_S:.0f} days"))
    return _pass(seen)


def _policy_fix(m: ModelFacts, field: str) -> str:
    return f"shipyard deployments set-policy {m.name} policy.yaml   # with {field}"


# -- data pipelines ----------------------------------------------------------------------------


def _schema(facts: Facts, subject: Subject) -> Verdict:
    p = _pipeline(subject)
    if not p.datasets:
        return _fail(
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
        return _fail(
            f"shipyard run {shlex.quote(p.file or PIPELINE_FILE)}   # publish the reference of "
            f"{names} with observe(..., role='reference')",
            *found,
            Evidence(f"no reference schema for {names}"),
        )
    return _pass(*found)


def _invariants(facts: Facts, subject: Subject) -> Verdict:
    return _monitored(
        facts, _pipeline(subject), "data_problems", ("shipyard_data_problem_fraction",),
        "DataQuality",
    )  # fmt: skip


def _feature_drift(facts: Facts, subject: Subject) -> Verdict:
    return _monitored(facts, _pipeline(subject), "feature_drift", DRIFT_METRICS, "DataDrift")


def _label_drift(facts: Facts, subject: Subject) -> Verdict:
    return _monitored(facts, _pipeline(subject), "label_drift", DRIFT_METRICS, "DataDrift")


def _cost(facts: Facts, subject: Subject) -> Verdict:
    p = _pipeline(subject)
    if not p.declared:
        return _fail(
            f"shipyard run {shlex.quote(p.file or PIPELINE_FILE)}   # after giving every step "
            "@step(resources=Resources(cpu=…, memory=…))",
            Evidence(f"the last run of {p.name} has steps without declared resources"),
        )
    if p.measured_at is None:
        return _fail(
            f"shipyard run {shlex.quote(p.file or PIPELINE_FILE)}",
            Evidence(f"no measured usage of {p.name} on record"),
        )
    return _pass(
        Evidence(f"every step of {p.name}'s last run declared its resources"),
        Evidence("usage measured (CPU seconds, peak memory)", p.measured_at),
    )


def _quota_member(facts: Facts, subject: Subject) -> Verdict:
    p = _pipeline(subject)
    if p.member_of:
        return _pass(Evidence(f"{p.name} is a member of pool {', '.join(p.member_of)}"))
    used = f" (its runs used {', '.join(p.pools_used)} as a stranger)" if p.pools_used else ""
    return _fail(
        "shipyard quota apply pools.yaml   # with "
        f"{{pipeline: {p.name}, share: …, cap: …}} among a pool's members",
        Evidence(f"no pool names {p.name} as a member{used}"),
    )


# -- training and validation pipelines ---------------------------------------------------------


def _training_time(facts: Facts, subject: Subject) -> Verdict:
    return _monitored(
        facts, _pipeline(subject), "training_time", ("shipyard_training_duration_ratio",),
        "TrainingSlow",
    )  # fmt: skip


def _training_failures(facts: Facts, subject: Subject) -> Verdict:
    return _monitored(
        facts, _pipeline(subject), "training_failures", ("shipyard_run_failed",), "TrainingFailed"
    )


def _automated(facts: Facts, subject: Subject) -> Verdict:
    p = _pipeline(subject)
    if not p.trained:
        return _fail(
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
                return _pass(
                    Evidence(f"a run of {p.name} registered {model} v{version}"),
                    Evidence(f"validation gate {'passed' if gated[-1].passed else 'failed'}",
                             gated[-1].at),
                    Evidence(f"rollout {rolled[-1].id} ({rolled[-1].state})",
                             rolled[-1].created_at),
                )  # fmt: skip
    model, version = p.trained[-1]
    return _fail(
        f"shipyard run {shlex.quote(p.file or PIPELINE_FILE)} --param deploy=true   # the step "
        "calls validate_and_deploy(...) after register_model(...)",
        Evidence(f"{p.name} registered {model} v{version}, but no version of it went through "
                 "the gate into a rollout"),
    )  # fmt: skip


def _test_set_drift(facts: Facts, subject: Subject) -> Verdict:
    return _monitored(facts, _pipeline(subject), "test_set_drift", DRIFT_METRICS, "DataDrift")


# -- models ------------------------------------------------------------------------------------


def _lineage(facts: Facts, subject: Subject) -> Verdict:
    m = _model(subject)
    v = m.serving
    if v is None:
        return _fail(f"shipyard models register {m.name} MODEL_FILE", Evidence("no version"))
    data = v.lineage.get("data") or []
    problems = []
    if not v.run_id:
        problems.append("no training run")
    if not data:
        problems.append("no training data digests")
    if problems:
        return _fail(
            "shipyard run TRAINING.py   # register from a training step with "
            "register_model(...), which records the run, its code and the data it read",
            Evidence(f"{m.name} v{v.version}: {', '.join(problems)}", v.created_at),
        )
    return _pass(
        Evidence(f"{m.name} v{v.version} trained by run {v.run_id} on {len(data)} data "
                 "artifact(s), content-addressed", v.created_at),
    )  # fmt: skip


def _review(facts: Facts, subject: Subject) -> Verdict:
    m = _model(subject)
    if m.policy is None:
        return _fail(
            _policy_fix(m, "approvals: {start: {count: 1, four_eyes: true}}"),
            Evidence(f"{m.name} has no stored policy: nobody must review a version"),
        )
    rule = m.policy.approvals.start
    if rule.count < 1 or not rule.four_eyes:
        return _fail(
            _policy_fix(m, "approvals: {start: {count: 1, four_eyes: true}}"),
            Evidence(f"approvals.start asks {rule.count}, four_eyes={rule.four_eyes}"),
        )
    v = m.serving
    author = v.created_by if v is not None else ""
    return _pass(
        Evidence(f"{rule.count} approval(s) by someone other than the author before a rollout "
                 "starts", m.policy_set_at),
        Evidence(f"author of the serving version recorded: {author or '(unknown)'}"),
    )  # fmt: skip


def _online_offline(facts: Facts, subject: Subject) -> Verdict:
    m = _model(subject)
    v = m.serving
    if v is None or not v.metrics:
        return _fail(
            f"shipyard models register {m.name} MODEL_FILE --metric accuracy=…",
            Evidence("no offline metric registered with the serving version"),
        )
    seen = _seen(m, "serving.quality")
    offline = Evidence(f"offline: {', '.join(f'{k}={val}' for k, val in v.metrics.items())}")
    if seen is None or "labelled rows so far" in seen.summary:
        got = f" ({seen.summary})" if seen is not None else ""
        return _fail(
            f"curl -X POST $SHIPYARD_SERVE/v2/models/{m.name}/feedback   # send the late labels "
            "of answered requests (by request id), then `shipyard monitors serving "
            f"{m.name}`",
            offline,
            Evidence(f"no online quality measured from late labels{got}",
                     seen.at if seen else None),
        )  # fmt: skip
    return _pass(offline, Evidence(f"online: {seen.summary}", seen.at))


def _baseline(facts: Facts, subject: Subject) -> Verdict:
    m = _model(subject)
    if m.policy is None or not m.policy.gate.no_regression:
        return _fail(
            _policy_fix(m, "gate: {no_regression: [accuracy]}"),
            Evidence("no stored policy compares a version with the serving one"),
        )
    compared = [g for g in m.gates if g.baseline is not None]
    rule = Evidence(f"gate: no regression of {', '.join(m.policy.gate.no_regression)}")
    if compared:
        g = compared[-1]
        return _pass(rule, Evidence(f"v{g.version} compared with v{g.baseline}", g.at))
    if len(m.versions) <= 1 and m.gates:
        return _pass(
            rule, Evidence("only one version: nothing to compare with yet", m.gates[-1].at)
        )
    return _fail(
        f"shipyard models validate {m.name} TEST_DATA --version N --label LABEL",
        rule,
        Evidence("no gate result compared a version with a baseline"),
    )


def _smoke(facts: Facts, subject: Subject) -> Verdict:
    m = _model(subject)
    if m.policy is None or "staging" not in m.policy.environments or not m.policy.staging.smoke:
        return _fail(
            _policy_fix(m, "environments: [staging, canary, production], staging: {smoke: true}"),
            Evidence("no stored policy with a staging smoke check"),
        )
    staged = [r for r in m.rollouts if r.staged]
    if not staged:
        return _fail(
            f"shipyard deploy {m.name} VERSION",
            Evidence("staging smoke check set, but no rollout has passed it yet"),
        )
    return _pass(
        Evidence(f"staging: smoke check of {m.policy.staging.sample_rows} rows within "
                 f"{m.policy.staging.max_latency_ms:g} ms", m.policy_set_at),
        Evidence(f"rollout {staged[-1].id} of v{staged[-1].version} passed it",
                 staged[-1].created_at),
    )  # fmt: skip


def _gate(facts: Facts, subject: Subject) -> Verdict:
    m = _model(subject)
    gate = m.policy.gate if m.policy is not None else None
    if gate is None or not gate.required or not (gate.minimum or gate.maximum):
        return _fail(
            _policy_fix(m, "gate: {required: true, minimum: {accuracy: …}}"),
            Evidence("no stored policy requires a validation gate with thresholds"),
        )
    v = m.serving
    passed = [g for g in m.gates if v is not None and g.version == v.version and g.passed]
    bounds = Evidence(f"gate required: minimum {gate.minimum}, maximum {gate.maximum}")
    if not passed:
        return _fail(
            f"shipyard models validate {m.name} TEST_DATA --label LABEL",
            bounds,
            Evidence("the serving version has not passed the gate"),
        )
    return _pass(bounds, Evidence(f"v{passed[-1].version} passed", passed[-1].at))


def _debuggable(facts: Facts, subject: Subject) -> Verdict:
    m = _model(subject)
    if facts.request_log_sample_rate <= 0:
        return _fail(
            "export SHIPYARD_SERVING__REQUEST_LOG_SAMPLE_RATE=0.01   # then restart shipyard serve",
            Evidence("no request is logged (request_log_sample_rate = 0)"),
        )
    if not m.windows:
        return _fail(
            f"shipyard serve --model {m.name}",
            Evidence(f"no serving window of {m.name} was flushed"),
        )
    return _pass(
        Evidence(f"{m.windows} serving windows flushed", m.last_window_at),
        Evidence(f"{facts.request_log_sample_rate:g} of requests logged with their request ids"),
    )


def _canary(facts: Facts, subject: Subject) -> Verdict:
    m = _model(subject)
    if m.policy is None or not m.policy.uses_canary():
        return _fail(
            _policy_fix(m, "environments: [staging, canary, production] and canary.steps"),
            Evidence("no stored policy with canary steps"),
        )
    steps = ", ".join(f"{s.weight_pct:g} %" for s in m.policy.canary.steps)
    metrics = ", ".join(r.name for r in m.policy.analysis.metrics)
    rule = Evidence(f"canary steps {steps}, judged on {metrics}", m.policy_set_at)
    canaried = [r for r in m.rollouts if r.canaried]
    if not canaried:
        return _fail(
            f"shipyard deploy {m.name} VERSION   # a second version: the first has no stable "
            "version to be compared with",
            rule,
            Evidence("no rollout has been judged in canary yet"),
        )
    r = canaried[-1]
    return _pass(
        rule, Evidence(f"rollout {r.id} of v{r.version} canaried: {r.state}", r.created_at)
    )


def _rollback(facts: Facts, subject: Subject) -> Verdict:
    m = _model(subject)
    recent = [t for t in m.rollbacks if facts.now - t <= ROLLBACK_MAX_AGE_S]
    drill = _drilled(facts, "rollback", m.name, f"shipyard readiness {m.name} --drill")
    if recent:
        return _pass(Evidence(f"production rolled back {len(recent)} time(s)", max(recent)),
                     *drill.evidence)  # fmt: skip
    return drill


def _skew(facts: Facts, subject: Subject) -> Verdict:
    m = _model(subject)
    v = m.serving
    if v is None or v.reference_profile is None:
        return _fail(
            f"shipyard models register {m.name} MODEL_FILE --training-data TRAIN.parquet",
            Evidence("the serving version has no training-data profile to compare with"),
        )
    return _serving_check(facts, m, "serving.input_skew", DRIFT_METRICS, "DataDrift")


def _staleness(facts: Facts, subject: Subject) -> Verdict:
    m = _model(subject)
    v = m.serving
    if v is None:
        return _fail(f"shipyard models register {m.name} MODEL_FILE", Evidence("no version"))
    age = facts.now - v.created_at
    seen = Evidence(f"serving v{v.version}, {age / DAY_S:.1f} days old", v.created_at)
    if age > STALE_AFTER_S:
        return _fail("shipyard run TRAINING.py   # or give the training pipeline a schedule", seen)
    return _pass(seen)


def _numeric(facts: Facts, subject: Subject) -> Verdict:
    return _serving_check(
        facts, _model(subject), "serving.data_type_problems",
        ("shipyard_serving_data_errors_total", "shipyard_serving_requests_total",
         "shipyard_data_problem_fraction"),
        "ServingBadInput",
    )  # fmt: skip


def _latency(facts: Facts, subject: Subject) -> Verdict:
    return _serving_check(
        facts, _model(subject), "serving.latency",
        ("shipyard_serving_request_duration_seconds",), "ServingLatencyHigh",
    )  # fmt: skip


def _quality(facts: Facts, subject: Subject) -> Verdict:
    m = _model(subject)
    drift = _serving_check(
        facts, m, "serving.prediction_drift", ("shipyard_prediction_drift_score",),
        "PredictionDrift",
    )  # fmt: skip
    if drift.status != "pass":
        return drift
    rules, about = _rules(facts, ("shipyard_model_quality_drop",))
    if not rules:
        return _fail(_rule_fix("ModelQualityDrop"), *drift.evidence, about)
    judged = [
        seen
        for name in ("serving.prediction_drift", "serving.quality", "serving.estimated_quality")
        if (seen := _seen(m, name)) is not None and seen.judged
    ]
    if not judged:
        return _fail(
            f"shipyard monitors serving {m.name} --url URL   # once it has served enough traffic "
            "(a baseline of its first windows), late labels or logged probabilities",
            *drift.evidence,
            about,
            Evidence("neither prediction drift nor quality has been judged on data yet"),
        )
    return _pass(*drift.evidence, about, *(Evidence(f"judged: {s.summary}", s.at) for s in judged))


def _outage(facts: Facts, subject: Subject) -> Verdict:
    m = _model(subject)
    checked = _serving_check(
        facts, m, "serving.outage", ("shipyard_serving_probe_up",), "ModelOutage"
    )
    if checked.status != "pass":
        return checked
    drill = _drilled(facts, "outage", m.name, f"shipyard readiness {m.name} --drill")
    return Verdict(drill.status, checked.evidence + drill.evidence, drill.fix)


def _policy(facts: Facts, subject: Subject) -> Verdict:
    m = _model(subject)
    if m.policy is None:
        return _fail(
            f"shipyard deployments set-policy {m.name} policy.yaml   # then `shipyard runbook "
            f"{m.name}` renders it",
            Evidence(f"{m.name} has no stored policy: approvals, where it goes, what to do on "
                     "failure and how to roll back are undocumented defaults"),
        )  # fmt: skip
    p = m.policy
    return _pass(
        Evidence(f"policy set by {m.policy_set_by or '?'}: approvals {p.approvals.start.count}, "
                 f"environments {' → '.join(p.environments)}, on failure "
                 f"{'+'.join(p.on_failure)}, rollback to {p.rollback.to}", m.policy_set_at),
    )  # fmt: skip


def _lead_time(facts: Facts, subject: Subject) -> Verdict:
    m = _model(subject)
    v = m.serving
    if v is None or m.production_since is None:
        return _fail(
            f"shipyard deploy {m.name} VERSION",
            Evidence(f"{m.name} has no version in production"),
        )
    lead = max(0.0, m.production_since - v.created_at)
    seen = Evidence(
        f"v{v.version}: registered to production in {lead / 3600:.1f} h", m.production_since
    )
    if lead > LEAD_TIME_S:
        return _fail(
            "shipyard run TRAINING.py --param deploy=true   # automate register → validate → "
            "deploy",
            seen,
        )
    return _pass(seen)


# -- the workspace -----------------------------------------------------------------------------


def _delivery(facts: Facts, subject: Subject) -> Verdict:
    a = facts.alerting
    if a.config is None:
        return _unknown(Evidence(f"alerting configuration unreadable: {a.error}"))
    routed = sorted({node.receiver for node in a.config.route.walk()})
    evidence, bad = [], []
    for name in routed:
        r = a.receivers.get(name)
        if r is None or r.last_delivered_at is None:
            bad.append(name)
            evidence.append(Evidence(f"receiver {name} has never delivered a notification"))
            continue
        age = facts.now - r.last_delivered_at
        state = f"receiver {name} ({r.type} {r.describe}) delivered {r.delivered}"
        if r.failed:
            state += f", {r.failed} failed for good (last: {r.last_error})"
        evidence.append(Evidence(state, r.last_delivered_at))
        if age > DELIVERY_MAX_AGE_S:
            bad.append(name)
    if bad:
        return _fail(
            f"shipyard alerts test {bad[0]}   # then `shipyard readiness --drill` proves the "
            "whole path",
            *evidence,
        )
    return _pass(*evidence)


def _drift_drilled(facts: Facts, subject: Subject) -> Verdict:
    return _drilled(facts, "drift", None, "shipyard readiness --drill")


def _plan(facts: Facts, subject: Subject) -> Verdict:
    q = facts.quota
    if not q.pools:
        return _fail(
            "shipyard quota apply pools.yaml   # pools with capacity, members, shares and caps",
            Evidence("no quota pool"),
        )
    if q.plan_fits is None:
        return _unknown(Evidence("no scheduled pipeline with run history to plan for"),
                        *(Evidence(n) for n in q.plan_notes))  # fmt: skip
    head = Evidence(f"the week's schedules with {q.headroom_fraction:.0%} experiment headroom")
    if not q.plan_fits:
        return _fail(
            "shipyard quota plan   # then raise the pool's capacity or move a schedule",
            head,
            *(Evidence(p) for p in q.plan_problems),
        )
    return _pass(head, Evidence("fits every pool"))


def _capped(facts: Facts, subject: Subject) -> Verdict:
    shared = [p for p in facts.quota.pools if p.mode == "shared"]
    if not shared:
        return _fail(
            "shipyard quota apply pools.yaml   # a pool with mode: shared and a cap per member",
            Evidence("no shared pool"),
        )
    evidence, greedy = [], []
    for pool in shared:
        for member in pool.members.values():
            whole = [r for r, cap in member.cap.items() if cap >= pool.capacity.get(r, 0) > 0]
            if whole:
                greedy.append(f"{member.pipeline} may take all of {pool.name}'s {', '.join(whole)}")
        evidence.append(
            Evidence(f"pool {pool.name}: {len(pool.members)} members, strangers capped at "
                     f"{pool.default_cap_fraction:.0%}")
        )  # fmt: skip
    if greedy:
        return _fail(
            "shipyard quota apply pools.yaml   # give each member a cap below 1",
            *evidence,
            *(Evidence(g) for g in greedy),
        )
    return _pass(*evidence, Evidence("no member may take a whole resource of a shared pool"))


def _exhaustion(facts: Facts, subject: Subject) -> Verdict:
    rules, about = _rules(facts, QUOTA_METRICS)
    if not rules:
        return _fail(_rule_fix("QuotaExhaustionSoon"), about)
    drill = _drilled(facts, "quota", None, "shipyard readiness --drill")
    return Verdict(drill.status, (about, *drill.evidence), drill.fix)


RUN_DATA = "shipyard run DATA_PIPELINE.py   # a Pipeline(kind='data') whose steps call observe()"
RUN_TRAINING = (
    "shipyard run TRAINING.py   # a Pipeline(kind='training') that calls register_model()"
)
RUN_VALIDATION = (
    "shipyard run VALIDATION.py   # a Pipeline(kind='validation') that observes its test set"
)
REGISTER = "shipyard models register MODEL MODEL_FILE --training-data TRAIN.parquet"

ITEMS: tuple[Item, ...] = (
    Item("data.schema", "Data sets have a schema", "data", ("Data 1",),
         "schema and monitors exist for each data set", _schema, RUN_DATA),
    Item("data.invariants", "Data-type problems checked and alerted", "data", ("Monitor 2",),
         "data-type problems (missing, corrupted values)", _invariants, RUN_DATA),
    Item("data.feature_drift", "Feature drift monitored and alerted", "data", ("Monitor 1",),
         "skew/drift of feature values", _feature_drift, RUN_DATA),
    Item("data.label_drift", "Label drift monitored and alerted", "data", ("Monitor 1",),
         "skew/drift of label values", _label_drift, RUN_DATA),
    Item("pipeline.cost", "Resources declared and usage measured", "pipeline", ("Data 3",),
         "the right hardware: steps declare what they need, usage is measured", _cost, RUN_DATA),
    Item("pipeline.quota", "A member of a quota pool", "pipeline", (),
         "enough quota for every pipeline", _quota_member, RUN_DATA),
    Item("training.time", "Training time monitored and alerted", "training", ("Monitor 6",),
         "training time", _training_time, RUN_TRAINING),
    Item("training.failures", "Training failures monitored and alerted", "training", (),
         "training failures", _training_failures, RUN_TRAINING),
    Item("training.automated", "Training → validation → deploy automated", "training",
         ("Infra 3",), "validation and deployment automated after training", _automated,
         RUN_TRAINING),
    Item("validation.test_set_drift", "Test-set drift checked and alerted", "validation", (),
         "skew/drift of the test data sets", _test_set_drift, RUN_VALIDATION),
    Item("model.lineage", "Lineage to its run, code and data", "model", ("Infra 1", "Model 1"),
         "a model's lineage to its data and code", _lineage, REGISTER),
    Item("model.review", "Four-eyes approval before serving", "model", ("Model 1",),
         "which approvals are required", _review, REGISTER),
    Item("model.online_offline", "Online quality measured against offline", "model",
         ("Model 2",), "model quality with late labels", _online_offline, REGISTER),
    Item("model.baseline", "Gate compares with a baseline", "model", ("Model 5",),
         "a validation gate with a baseline comparison", _baseline, REGISTER),
    Item("model.smoke", "Staging smoke check passed", "model", ("Infra 2",),
         "where it is deployed (staging)", _smoke, REGISTER),
    Item("model.gate", "Validation gate required and passed", "model", ("Infra 4",),
         "validation automated after training", _gate, REGISTER),
    Item("model.debuggable", "Requests logged and windows flushed", "model", ("Infra 5",),
         "logs structured and correlated (request id, model version)", _debuggable, REGISTER),
    Item("model.canary", "Canary steps judged", "model", ("Infra 6",),
         "rolled out to a subset of users, judged statistically", _canary, REGISTER),
    Item("model.rollback", "Rollback done or rehearsed recently", "model", ("Infra 7",),
         "how to roll back; any production model rolled back by one command", _rollback,
         REGISTER),
    Item("model.skew", "Serving skew against training data", "model", ("Monitor 3",),
         "skew/drift of serving inputs vs training data", _skew, REGISTER),
    Item("model.staleness", "Serving version not stale", "model", ("Monitor 4",),
         "models refreshed", _staleness, REGISTER),
    Item("model.numeric", "Bad serving input checked and alerted", "model", ("Monitor 5",),
         "data-type problems of serving inputs", _numeric, REGISTER),
    Item("model.latency", "Latency monitored and alerted", "model", ("Monitor 6",),
         "latency (how long a prediction takes)", _latency, REGISTER),
    Item("model.quality", "Prediction drift and quality alerted", "model", ("Monitor 7",),
         "skew/drift of predictions; model quality", _quality, REGISTER),
    Item("model.outage", "Outage probed, alerted and drilled", "model", (),
         "outage (the model stopped answering)", _outage, REGISTER),
    Item("model.policy", "Deployment policy documented", "model", (),
         "a documented deployment: approvals, how, where, on failure, rollback", _policy,
         REGISTER),
    Item("model.lead_time", "Registered to production quickly", "model", ("Data 6",),
         "validation and deployment automated after training", _lead_time, REGISTER),
    Item("alerts.delivery", "Every routed receiver delivered recently", "workspace",
         ("Monitor 1",), "alerts that reach people", _delivery),
    Item("alerts.drilled", "A drift alert proven to reach a receiver", "workspace",
         ("Monitor 1",), "alerts that reach people (proven by a drill)", _drift_drilled),
    Item("quota.plan", "Schedules fit with experiment headroom", "workspace", (),
         "enough quota for every schedule, with headroom for experiments", _plan),
    Item("quota.capped", "No pipeline may take a whole shared pool", "workspace", (),
         "shared quota watched so no errant pipeline takes it all", _capped),
    Item("quota.exhaustion", "Quota exhaustion alerted and drilled", "workspace", (),
         "quota limit about to be reached", _exhaustion),
)  # fmt: skip

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
