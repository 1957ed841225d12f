"""The checks of the workspace as a whole: alerts that reach their receivers (and a drill
that proved it), quota that fits every schedule, shared pools no pipeline can take whole, and
exhaustion alerted.
"""

from __future__ import annotations

from shipyard.readiness.evidence import Facts
from shipyard.readiness.verdicts import (
    DELIVERY_MAX_AGE_S,
    QUOTA_METRICS,
    Evidence,
    Subject,
    Verdict,
    drilled,
    failed,
    passed,
    rule_fix,
    rules_on,
    unknown,
)


def delivery(facts: Facts, subject: Subject) -> Verdict:
    a = facts.alerting
    if a.config is None:
        return unknown(Evidence(f"alerting configuration unreadable: {a.error}"))
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
        return failed(
            f"shipyard alerts test {bad[0]}   # then `shipyard readiness --drill` proves the "
            "whole path",
            *evidence,
        )
    return passed(*evidence)


def drift_drilled(facts: Facts, subject: Subject) -> Verdict:
    return drilled(facts, "drift", None, "shipyard readiness --drill --only drift")


def plan(facts: Facts, subject: Subject) -> Verdict:
    q = facts.quota
    if not q.pools:
        return failed(
            "shipyard quota apply pools.yaml   # pools with capacity, members, shares and caps",
            Evidence("no quota pool"),
        )
    if q.plan_fits is None:
        return unknown(Evidence("no scheduled pipeline with run history to plan for"),
                        *(Evidence(n) for n in q.plan_notes))  # fmt: skip
    head = Evidence(f"the week's schedules with {q.headroom_fraction:.0%} experiment headroom")
    if not q.plan_fits:
        return failed(
            "shipyard quota plan   # then raise the pool's capacity or move a schedule",
            head,
            *(Evidence(p) for p in q.plan_problems),
        )
    return passed(head, Evidence("fits every pool"))


def capped(facts: Facts, subject: Subject) -> Verdict:
    shared = [p for p in facts.quota.pools if p.mode == "shared"]
    if not shared:
        return failed(
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
        return failed(
            "shipyard quota apply pools.yaml   # give each member a cap below 1",
            *evidence,
            *(Evidence(g) for g in greedy),
        )
    return passed(*evidence, Evidence("no member may take a whole resource of a shared pool"))


def exhaustion(facts: Facts, subject: Subject) -> Verdict:
    rules, about = rules_on(facts, QUOTA_METRICS)
    if not rules:
        return failed(rule_fix("QuotaExhaustionSoon"), about)
    drill = drilled(facts, "quota", None, "shipyard readiness --drill --only quota")
    return Verdict(drill.status, (about, *drill.evidence), drill.fix)
