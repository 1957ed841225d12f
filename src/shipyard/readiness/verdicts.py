"""What every readiness check shares: a verdict (pass, fail or unknown) with its evidence and
the command that fixes a fail, the ages after which evidence no longer counts, and the small
judgements the checks are made of (a monitor on and alerted, a drill recent and passed…).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
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

DEFAULT_DRILL_TIMEOUT_S = 60.0
"""How long a drill may take unless ``--timeout`` says otherwise."""
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


# -- helpers -----------------------------------------------------------------------------------


def passed(*evidence: Evidence) -> Verdict:
    return Verdict("pass", tuple(evidence))


def failed(fix: str, *evidence: Evidence) -> Verdict:
    return Verdict("fail", tuple(evidence), fix)


def unknown(*evidence: Evidence) -> Verdict:
    return Verdict("unknown", tuple(evidence))


def pipeline_of(subject: Subject) -> PipelineFacts:
    assert isinstance(subject, PipelineFacts)
    return subject


def model_of(subject: Subject) -> ModelFacts:
    assert isinstance(subject, ModelFacts)
    return subject


def rules_on(facts: Facts, metrics: Sequence[str]) -> tuple[list[Rule], Evidence]:
    rules = facts.alerting.rules_on(*metrics)
    if facts.alerting.config is None:
        return [], Evidence(f"alerting configuration unreadable: {facts.alerting.error}")
    if rules:
        names = ", ".join(sorted({r.name for r in rules}))
        return rules, Evidence(f"alert rules on {'/'.join(metrics)}: {names}")
    return [], Evidence(f"no enabled alert rule reads {' or '.join(metrics)}")


def rule_fix(name: str) -> str:
    return (
        f"shipyard alerts rules   # then switch {name} on in alerting.yaml "
        f"(defaults: {{{name}: true}}) and restart `shipyard daemon`"
    )


def monitor_fix(p: PipelineFacts, monitor: str) -> str:
    return (
        f"shipyard run {shlex.quote(p.file or PIPELINE_FILE)}   # after setting "
        f'Pipeline("{p.name}", monitors={{"{monitor}": True}}) in the file'
    )


def monitored(
    facts: Facts, p: PipelineFacts, monitor: str, metrics: Sequence[str], rule: str
) -> Verdict:
    """A pipeline monitor that is on, has judged data (the pipeline's own, or another
    pipeline's against this one's reference), and has a rule that alerts on it."""
    if not p.monitors.get(monitor, False):
        return failed(monitor_fix(p, monitor), Evidence(f"monitor {monitor} of {p.name} is off"))
    seen = p.findings.get(monitor)
    where = ""
    if seen is None and monitor in p.judged_elsewhere:
        other, seen = p.judged_elsewhere[monitor]
        where = f" (on {other}'s data, against {p.name}'s reference)"
    if seen is None:
        return failed(
            f"shipyard run {shlex.quote(p.file or PIPELINE_FILE)}   # a run whose step publishes "
            "with observe(..., role='current')",
            Evidence(f"monitor {monitor} is on but has judged nothing yet"),
        )
    found = Evidence(f"{monitor}{where}: {seen.status}, {seen.summary}", seen.at)
    return alerted(facts, metrics, rule, found)


def seen_by(m: ModelFacts, monitor: str) -> Seen | None:
    return m.findings.get(monitor)


def serving_check(
    facts: Facts, m: ModelFacts, monitor: str, metrics: Sequence[str], rule: str
) -> Verdict:
    seen = seen_by(m, monitor)
    if seen is None:
        return failed(
            f"shipyard monitors serving {m.name} --url URL   # or keep `shipyard daemon` running "
            "beside `shipyard serve`",
            Evidence(f"no {monitor} verdict on {m.name} yet"),
        )
    found = Evidence(f"{monitor}: {seen.status}, {seen.summary}", seen.at)
    return alerted(facts, metrics, rule, found)


def alerted(facts: Facts, metrics: Sequence[str], rule: str, found: Evidence) -> Verdict:
    """A monitor that judges passes only when an alert rule reads what it writes."""
    rules, about = rules_on(facts, metrics)
    if not rules:
        return failed(rule_fix(rule), found, about)
    return passed(found, about)


def drilled(facts: Facts, kind: str, subject: str | None, command: str) -> Verdict:
    drill = facts.last_drill(kind, subject)
    where = f" of {subject}" if subject else ""
    if drill is None:
        return failed(command, Evidence(f"no {kind} drill{where} on record"))
    age = facts.now - drill.ended_at
    took = ", ".join(f"{k} {v:.1f} s" for k, v in drill.signals.items())
    seen = Evidence(
        f"{kind} drill{where} {'passed' if drill.passed else 'failed'}"
        + (f": {drill.reason}" if drill.reason else "")
        + (f" ({took})" if took else ""),
        drill.ended_at,
    )
    if not drill.passed:
        return failed(command, seen)
    if age > DRILL_MAX_AGE_S:
        return failed(command, seen, Evidence(f"older than {DRILL_MAX_AGE_S / DAY_S:.0f} days"))
    return passed(seen)


def policy_fix(m: ModelFacts, field: str) -> str:
    return f"shipyard deployments set-policy {m.name} policy.yaml   # with {field}"
