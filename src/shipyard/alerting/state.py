"""The alert state machine, persisted: inactive → pending → firing → resolved.

Prometheus' semantics (``rules/alerting.go``): a new hit is *pending* from ``active_at``; it
becomes *firing* once ``now − active_at ≥ for`` (at once when ``for`` is 0); a pending alert whose
condition clears is dropped (inactive); a firing one is *resolved* when its condition has been
false for ``keep_firing_for``. A resolved alert is kept 15 minutes (Prometheus re-sends
resolutions that long), then deleted. Fingerprint = hash of the alert's labels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from shipyard.alerting.rules import Hit, Rule, evaluate_rule
from shipyard.statuses import AlertState
from shipyard.store.alerting import AlertRecord

RESOLVED_RETENTION_S = 15 * 60


@dataclass(frozen=True)
class Transition:
    fingerprint: str
    rule: str
    labels: dict[str, str]
    old: str
    new: str
    at: float


def rule_key(rule: Rule) -> str:
    return f"{rule.name}/{rule.severity}"


def evaluate_all(session: Session, rules: Iterable[Rule], now: float) -> dict[str, list[Hit]]:
    """Every enabled rule's hits at ``now``, by rule key (reads only)."""
    return {rule_key(r): evaluate_rule(session, r, now) for r in rules if r.enabled}


def apply_rules(
    session: Session,
    rules: Iterable[Rule],
    now: float,
    hits_by_rule: Mapping[str, list[Hit]] | None = None,
) -> list[Transition]:
    """Move every enabled rule's alerts to where its hits at ``now`` put them (evaluating the
    rules here unless ``hits_by_rule`` already holds their hits); returns what changed."""
    changes: list[Transition] = []
    by_key = {rule_key(r): r for r in rules if r.enabled}
    existing: dict[str, dict[str, AlertRecord]] = {}
    for row in session.scalars(select(AlertRecord)):
        existing.setdefault(row.rule, {})[row.fingerprint] = row

    def move(record: AlertRecord, new: str) -> None:
        changes.append(
            Transition(record.fingerprint, record.rule, dict(record.labels), record.state, new, now)
        )
        record.state = new

    for key, rule in by_key.items():
        mine = existing.pop(key, {})
        found = (
            hits_by_rule[key]
            if hits_by_rule is not None and key in hits_by_rule
            else evaluate_rule(session, rule, now)
        )
        hits = {hit.fingerprint: hit for hit in found}
        for fp, hit in hits.items():
            record = mine.pop(fp, None)
            if record is None:
                record = AlertRecord(
                    fingerprint=fp,
                    rule=key,
                    labels=hit.labels,
                    state=AlertState.INACTIVE,
                    active_at=now,
                    last_true_at=now,
                )
                session.add(record)
            if record.state in (AlertState.INACTIVE, AlertState.RESOLVED):
                move(record, AlertState.PENDING)
                record.active_at = now
                record.fired_at = None
                record.resolved_at = None
            record.last_true_at = now
            record.value = hit.value
            record.labels = hit.labels
            record.annotations = rule.render_annotations(hit.labels | hit.info, hit.value)
            if record.state == AlertState.PENDING and now - record.active_at >= rule.for_s:
                move(record, AlertState.FIRING)
                record.fired_at = now
        for record in mine.values():
            _condition_false(session, record, rule.keep_firing_for_s, now, move)
    for orphans in existing.values():  # rules removed or switched off: their alerts end
        for record in orphans.values():
            _condition_false(session, record, 0.0, now, move)
    return changes


def _condition_false(
    session: Session,
    record: AlertRecord,
    keep_firing_for_s: float,
    now: float,
    move: Callable[[AlertRecord, str], None],
) -> None:
    if record.state == AlertState.PENDING:
        move(record, AlertState.INACTIVE)
        session.delete(record)
    elif record.state == AlertState.FIRING:
        if now - record.last_true_at < keep_firing_for_s:
            return
        move(record, AlertState.RESOLVED)
        record.resolved_at = now
    elif (
        record.state == AlertState.RESOLVED
        and now - (record.resolved_at or now) > RESOLVED_RETENTION_S
    ):
        session.delete(record)
