"""The checks of models: lineage, review, the gate and its baseline, staging, canary and
rollback, the serving monitors alerted, a documented policy, staleness and lead time.
"""

from __future__ import annotations

from shipyard.readiness.evidence import Facts
from shipyard.readiness.verdicts import (
    DAY_S,
    DEFAULT_DRILL_TIMEOUT_S,
    DRIFT_METRICS,
    LEAD_TIME_S,
    ROLLBACK_MAX_AGE_S,
    STALE_AFTER_S,
    Evidence,
    Subject,
    Verdict,
    drilled,
    failed,
    model_of,
    passed,
    policy_fix,
    rule_fix,
    rules_on,
    seen_by,
    serving_check,
)


def lineage(facts: Facts, subject: Subject) -> Verdict:
    m = model_of(subject)
    v = m.serving
    if v is None:
        return failed(f"shipyard models register {m.name} MODEL_FILE", Evidence("no version"))
    data = v.lineage.get("data") or []
    problems = []
    if not v.run_id:
        problems.append("no training run")
    if not data:
        problems.append("no training data digests")
    if problems:
        return failed(
            "shipyard run TRAINING.py   # register from a training step with "
            "register_model(...), which records the run, its code and the data it read",
            Evidence(f"{m.name} v{v.version}: {', '.join(problems)}", v.created_at),
        )
    return passed(
        Evidence(f"{m.name} v{v.version} trained by run {v.run_id} on {len(data)} data "
                 "artifact(s), content-addressed", v.created_at),
    )  # fmt: skip


def review(facts: Facts, subject: Subject) -> Verdict:
    m = model_of(subject)
    if m.policy is None:
        return failed(
            policy_fix(m, "approvals: {start: {count: 1, four_eyes: true}}"),
            Evidence(f"{m.name} has no stored policy: nobody must review a version"),
        )
    rule = m.policy.approvals.start
    if rule.count < 1 or not rule.four_eyes:
        return failed(
            policy_fix(m, "approvals: {start: {count: 1, four_eyes: true}}"),
            Evidence(f"approvals.start asks {rule.count}, four_eyes={rule.four_eyes}"),
        )
    v = m.serving
    author = v.created_by if v is not None else ""
    return passed(
        Evidence(f"{rule.count} approval(s) by someone other than the author before a rollout "
                 "starts", m.policy_set_at),
        Evidence(f"author of the serving version recorded: {author or '(unknown)'}"),
    )  # fmt: skip


def online_offline(facts: Facts, subject: Subject) -> Verdict:
    m = model_of(subject)
    v = m.serving
    if v is None or not v.metrics:
        return failed(
            f"shipyard models register {m.name} MODEL_FILE --metric accuracy=…",
            Evidence("no offline metric registered with the serving version"),
        )
    seen = seen_by(m, "serving.quality")
    offline = Evidence(f"offline: {', '.join(f'{k}={val}' for k, val in v.metrics.items())}")
    if seen is None or "labelled rows so far" in seen.summary:
        got = f" ({seen.summary})" if seen is not None else ""
        return failed(
            f"curl -X POST -H 'Authorization: Bearer $OPERATOR_TOKEN' "
            f"$SHIPYARD_SERVE/v2/models/{m.name}/feedback   # send the late labels "
            "of answered requests (by request id), then `shipyard monitors serving "
            f"{m.name}`",
            offline,
            Evidence(f"no online quality measured from late labels{got}",
                     seen.at if seen else None),
        )  # fmt: skip
    return passed(offline, Evidence(f"online: {seen.summary}", seen.at))


def baseline(facts: Facts, subject: Subject) -> Verdict:
    m = model_of(subject)
    if m.policy is None or not m.policy.gate.no_regression:
        return failed(
            policy_fix(m, "gate: {no_regression: [accuracy]}"),
            Evidence("no stored policy compares a version with the serving one"),
        )
    compared = [g for g in m.gates if g.baseline is not None]
    rule = Evidence(f"gate: no regression of {', '.join(m.policy.gate.no_regression)}")
    if compared:
        g = compared[-1]
        return passed(rule, Evidence(f"v{g.version} compared with v{g.baseline}", g.at))
    if len(m.versions) <= 1 and m.gates:
        return passed(
            rule, Evidence("only one version: nothing to compare with yet", m.gates[-1].at)
        )
    return failed(
        f"shipyard models validate {m.name} TEST_DATA --version N --label LABEL",
        rule,
        Evidence("no gate result compared a version with a baseline"),
    )


def smoke(facts: Facts, subject: Subject) -> Verdict:
    m = model_of(subject)
    if m.policy is None or "staging" not in m.policy.environments or not m.policy.staging.smoke:
        return failed(
            policy_fix(m, "environments: [staging, canary, production], staging: {smoke: true}"),
            Evidence("no stored policy with a staging smoke check"),
        )
    staged = [r for r in m.rollouts if r.staged]
    if not staged:
        return failed(
            f"shipyard deploy {m.name} VERSION",
            Evidence("staging smoke check set, but no rollout has passed it yet"),
        )
    return passed(
        Evidence(f"staging: smoke check of {m.policy.staging.sample_rows} rows within "
                 f"{m.policy.staging.max_latency_ms:g} ms", m.policy_set_at),
        Evidence(f"rollout {staged[-1].id} of v{staged[-1].version} passed it",
                 staged[-1].created_at),
    )  # fmt: skip


def gate(facts: Facts, subject: Subject) -> Verdict:
    m = model_of(subject)
    gate = m.policy.gate if m.policy is not None else None
    if gate is None or not gate.required or not (gate.minimum or gate.maximum):
        return failed(
            policy_fix(m, "gate: {required: true, minimum: {accuracy: …}}"),
            Evidence("no stored policy requires a validation gate with thresholds"),
        )
    v = m.serving
    blessed = [g for g in m.gates if v is not None and g.version == v.version and g.passed]
    bounds = Evidence(f"gate required: minimum {gate.minimum}, maximum {gate.maximum}")
    if not blessed:
        return failed(
            f"shipyard models validate {m.name} TEST_DATA --label LABEL",
            bounds,
            Evidence("the serving version has not passed the gate"),
        )
    return passed(bounds, Evidence(f"v{blessed[-1].version} passed", blessed[-1].at))


def debuggable(facts: Facts, subject: Subject) -> Verdict:
    m = model_of(subject)
    if facts.request_log_sample_rate <= 0:
        return failed(
            "export SHIPYARD_SERVING__REQUEST_LOG_SAMPLE_RATE=0.01   # then restart shipyard serve",
            Evidence("no request is logged (request_log_sample_rate = 0)"),
        )
    if not m.windows:
        return failed(
            f"shipyard serve --model {m.name}",
            Evidence(f"no serving window of {m.name} was flushed"),
        )
    return passed(
        Evidence(f"{m.windows} serving windows flushed", m.last_window_at),
        Evidence(f"{facts.request_log_sample_rate:g} of requests logged with their request ids"),
    )


def canary(facts: Facts, subject: Subject) -> Verdict:
    m = model_of(subject)
    if m.policy is None or not m.policy.uses_canary():
        return failed(
            policy_fix(m, "environments: [staging, canary, production] and canary.steps"),
            Evidence("no stored policy with canary steps"),
        )
    steps = ", ".join(f"{s.weight_pct:g} %" for s in m.policy.canary.steps)
    metrics = ", ".join(r.name for r in m.policy.analysis.metrics)
    rule = Evidence(f"canary steps {steps}, judged on {metrics}", m.policy_set_at)
    canaried = [r for r in m.rollouts if r.canaried]
    if not canaried:
        return failed(
            f"shipyard deploy {m.name} VERSION   # a second version: the first has no stable "
            "version to be compared with",
            rule,
            Evidence("no rollout has been judged in canary yet"),
        )
    r = canaried[-1]
    return passed(
        rule, Evidence(f"rollout {r.id} of v{r.version} canaried: {r.state}", r.created_at)
    )


def rollback(facts: Facts, subject: Subject) -> Verdict:
    m = model_of(subject)
    recent = [t for t in m.rollbacks if facts.now - t <= ROLLBACK_MAX_AGE_S]
    drill = drilled(
        facts, "rollback", m.name, f"shipyard readiness {m.name} --drill --only rollback"
    )
    if recent:
        return passed(Evidence(f"production rolled back {len(recent)} time(s)", max(recent)),
                     *drill.evidence)  # fmt: skip
    return drill


def skew(facts: Facts, subject: Subject) -> Verdict:
    m = model_of(subject)
    v = m.serving
    if v is None or v.reference_profile is None:
        return failed(
            f"shipyard models register {m.name} MODEL_FILE --training-data TRAIN.parquet",
            Evidence("the serving version has no training-data profile to compare with"),
        )
    return serving_check(facts, m, "serving.input_skew", DRIFT_METRICS, "DataDrift")


def staleness(facts: Facts, subject: Subject) -> Verdict:
    m = model_of(subject)
    v = m.serving
    if v is None:
        return failed(f"shipyard models register {m.name} MODEL_FILE", Evidence("no version"))
    age = facts.now - v.created_at
    seen = Evidence(f"serving v{v.version}, {age / DAY_S:.1f} days old", v.created_at)
    if age > STALE_AFTER_S:
        return failed("shipyard run TRAINING.py   # or give the training pipeline a schedule", seen)
    return passed(seen)


def numeric(facts: Facts, subject: Subject) -> Verdict:
    return serving_check(
        facts, model_of(subject), "serving.data_type_problems",
        ("shipyard_serving_data_errors_total", "shipyard_serving_requests_total",
         "shipyard_data_problem_fraction"),
        "ServingBadInput",
    )  # fmt: skip


def latency(facts: Facts, subject: Subject) -> Verdict:
    return serving_check(
        facts, model_of(subject), "serving.latency",
        ("shipyard_serving_request_duration_seconds",), "ServingLatencyHigh",
    )  # fmt: skip


def quality(facts: Facts, subject: Subject) -> Verdict:
    m = model_of(subject)
    drift = serving_check(
        facts, m, "serving.prediction_drift", ("shipyard_prediction_drift_score",),
        "PredictionDrift",
    )  # fmt: skip
    if drift.status != "pass":
        return drift
    rules, about = rules_on(facts, ("shipyard_model_quality_drop",))
    if not rules:
        return failed(rule_fix("ModelQualityDrop"), *drift.evidence, about)
    judged = [
        seen
        for name in ("serving.prediction_drift", "serving.quality", "serving.estimated_quality")
        if (seen := seen_by(m, name)) is not None and seen.judged
    ]
    if not judged:
        return failed(
            f"shipyard monitors serving {m.name} --url URL   # once it has served enough traffic "
            "(a baseline of its first windows), late labels or logged probabilities",
            *drift.evidence,
            about,
            Evidence("neither prediction drift nor quality has been judged on data yet"),
        )
    return passed(*drift.evidence, about, *(Evidence(f"judged: {s.summary}", s.at) for s in judged))


def outage(facts: Facts, subject: Subject) -> Verdict:
    m = model_of(subject)
    checked = serving_check(
        facts, m, "serving.outage", ("shipyard_serving_probe_up",), "ModelOutage"
    )
    if checked.status != "pass":
        return checked
    slowest = max(
        (r.for_s for r in facts.alerting.rules_on("shipyard_serving_probe_up")), default=0
    )
    timeout = f" --timeout {slowest + 30:g}" if slowest + 30 > DEFAULT_DRILL_TIMEOUT_S else ""
    command = f"shipyard readiness {m.name} --drill --only outage{timeout}"
    drill = drilled(facts, "outage", m.name, command)
    return Verdict(drill.status, checked.evidence + drill.evidence, drill.fix)


def policy(facts: Facts, subject: Subject) -> Verdict:
    m = model_of(subject)
    if m.policy is None:
        return failed(
            f"shipyard deployments set-policy {m.name} policy.yaml   # then `shipyard runbook "
            f"{m.name}` renders it",
            Evidence(f"{m.name} has no stored policy: approvals, where it goes, what to do on "
                     "failure and how to roll back are undocumented defaults"),
        )  # fmt: skip
    p = m.policy
    return passed(
        Evidence(f"policy set by {m.policy_set_by or '?'}: approvals {p.approvals.start.count}, "
                 f"environments {' → '.join(p.environments)}, on failure "
                 f"{'+'.join(p.on_failure)}, rollback to {p.rollback.to}", m.policy_set_at),
    )  # fmt: skip


def lead_time(facts: Facts, subject: Subject) -> Verdict:
    m = model_of(subject)
    v = m.serving
    if v is None or m.production_since is None:
        return failed(
            f"shipyard deploy {m.name} VERSION",
            Evidence(f"{m.name} has no version in production"),
        )
    lead = max(0.0, m.production_since - v.created_at)
    seen = Evidence(
        f"v{v.version}: registered to production in {lead / 3600:.1f} h", m.production_since
    )
    if lead > LEAD_TIME_S:
        return failed(
            "shipyard run TRAINING.py --param deploy=true   # automate register → validate → "
            "deploy",
            seen,
        )
    return passed(seen)
