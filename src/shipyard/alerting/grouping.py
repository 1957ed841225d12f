"""Routing and grouping: which receiver hears of an alert, with which others, and when.

Alertmanager's semantics (``dispatch/route.go``, ``dispatch/dispatch.go``):

* The root route matches everything; children are tried depth-first, the first that matches
  wins unless it says ``continue``; a child inherits its parent's options.
* Alerts of one receiver with equal values of ``group_by`` form a group. A new group is first
  sent ``group_wait`` after its first alert (an alert that resolves before that is never sent);
  later changes (new alerts, resolutions) are sent at most every ``group_interval``; an unchanged
  firing group is re-sent every ``repeat_interval``.
* Silenced and inhibited alerts are left out of their groups.

Each decision writes a notification row (the outbox) and the group's memory in the caller's
transaction, so a restart neither loses nor repeats a decision.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shipyard.alerting.inhibition import InhibitRule, inhibited
from shipyard.alerting.matchers import Matcher, match_all
from shipyard.alerting.silences import active_silences, silenced
from shipyard.statuses import AlertState, NotificationStatus
from shipyard.store.alerting import AlertGroupRecord, AlertRecord, NotificationRecord

ZERO_TIME = "0001-01-01T00:00:00Z"


@dataclass(frozen=True)
class Route:
    """A node of the routing tree (Alertmanager's defaults: 30 s, 5 min, 4 h)."""

    receiver: str
    matchers: tuple[Matcher, ...] = ()
    group_by: tuple[str, ...] = ("alertname",)
    group_wait_s: float = 30.0
    group_interval_s: float = 300.0
    repeat_interval_s: float = 4 * 3600.0
    continue_: bool = False
    routes: tuple[Route, ...] = field(default=())

    def walk(self) -> Iterable[Route]:
        yield self
        for child in self.routes:
            yield from child.walk()


def routes_for(root: Route, labels: Mapping[str, Any]) -> list[Route]:
    """The routes that receive an alert with these labels (the root matches everything)."""

    def visit(node: Route) -> list[Route]:
        if not match_all(node.matchers, labels):
            return []
        found: list[Route] = []
        for child in node.routes:
            below = visit(child)
            if below:
                found.extend(below)
                if not child.continue_:
                    break
        return found or [node]

    return visit(root)


def group_labels(route: Route, labels: Mapping[str, Any]) -> dict[str, str]:
    if "..." in route.group_by:
        return {k: str(v) for k, v in labels.items()}
    return {k: str(labels[k]) for k in route.group_by if k in labels}


def group_key(route: Route, labels: Mapping[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    key = f"{route.receiver}:{{{inner}}}"
    if len(key) > 480:
        key = f"{route.receiver}:#{hashlib.sha256(key.encode()).hexdigest()}"
    return key


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


@dataclass
class _Group:
    route: Route
    labels: dict[str, str]
    firing: list[AlertRecord] = field(default_factory=list)
    resolved: list[AlertRecord] = field(default_factory=list)


def dispatch(
    session: Session,
    root: Route,
    inhibit_rules: Sequence[InhibitRule],
    now: float,
    *,
    external_url: str = "",
) -> list[NotificationRecord]:
    """Decide which groups are due at ``now`` and write their notifications to the outbox."""
    alerts = list(
        session.scalars(
            select(AlertRecord).where(
                AlertRecord.state.in_((AlertState.FIRING, AlertState.RESOLVED))
            )
        )
    )
    silences = active_silences(session, now)
    firing_labels = [a.labels for a in alerts if a.state == AlertState.FIRING]
    groups: dict[str, _Group] = {}
    for alert in alerts:
        if alert.state == AlertState.FIRING and (
            silenced(alert.labels, silences, now)
            or inhibited(alert.labels, firing_labels, inhibit_rules)
        ):
            continue
        for route in routes_for(root, alert.labels):
            labels = group_labels(route, alert.labels)
            key = group_key(route, labels)
            group = groups.setdefault(key, _Group(route, labels))
            (group.firing if alert.state == AlertState.FIRING else group.resolved).append(alert)
    routes_by_receiver = {r.receiver: r for r in root.walk()}
    memory = {g.key: g for g in session.scalars(select(AlertGroupRecord))}
    sent: list[NotificationRecord] = []
    for key in sorted(set(groups) | set(memory)):
        record = memory.get(key)
        found = groups.get(key)
        if found is not None:
            group = found
        else:
            if record is not None:
                known = routes_by_receiver.get(record.receiver)
                if known is None:
                    session.delete(record)
                    continue
                group = _Group(known, dict(record.group_labels))
            else:
                continue
        firing = sorted(group.firing, key=lambda a: a.fingerprint)
        told_at = record.last_sent_at if record is not None else None
        newly_resolved = [
            a
            for a in group.resolved
            if told_at is not None
            and a.fired_at is not None
            and a.fired_at <= told_at
            and (a.resolved_at or 0.0) > told_at
        ]
        digest = hashlib.sha256(",".join(a.fingerprint for a in firing).encode()).hexdigest()
        if record is None:
            if not firing:
                continue
            record = AlertGroupRecord(
                key=key,
                receiver=group.route.receiver,
                group_labels=group.labels,
                first_seen_at=now,
                last_sent_at=None,
                last_firing_digest=None,
            )
            session.add(record)
        route = group.route
        if record.last_sent_at is None:
            if not firing:
                session.delete(record)
                continue
            due = now - record.first_seen_at >= route.group_wait_s
        else:
            if not firing and not newly_resolved:
                session.delete(record)
                continue
            changed = digest != record.last_firing_digest or bool(newly_resolved)
            since = now - record.last_sent_at
            due = (changed and since >= route.group_interval_s) or (
                not changed and since >= route.repeat_interval_s
            )
        if not due:
            continue
        payload = webhook_payload(
            key, route.receiver, group.labels, firing, newly_resolved, external_url
        )
        idempotency_key = hashlib.sha256(f"{key}|{now!r}|{digest}".encode()).hexdigest()[:32]
        notification = NotificationRecord(
            idempotency_key=idempotency_key,
            receiver=route.receiver,
            group_key=key,
            payload=payload,
            status=NotificationStatus.PENDING,
            attempts=0,
            created_at=now,
            next_attempt_at=now,
        )
        session.add(notification)
        sent.append(notification)
        record.last_sent_at = now
        record.last_firing_digest = digest
    return sent


def _alert_body(alert: AlertRecord, external_url: str) -> dict[str, Any]:
    return {
        "status": alert.state,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": rfc3339(alert.fired_at or alert.active_at),
        "endsAt": rfc3339(alert.resolved_at) if alert.resolved_at else ZERO_TIME,
        "generatorURL": f"{external_url}/alerts?rule={alert.rule}",
        "fingerprint": alert.fingerprint,
    }


def _common(dicts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    if not dicts:
        return {}
    common = dict(dicts[0])
    for other in dicts[1:]:
        common = {k: v for k, v in common.items() if other.get(k) == v}
    return common


def webhook_payload(
    key: str,
    receiver: str,
    labels: Mapping[str, str],
    firing: Sequence[AlertRecord],
    resolved: Sequence[AlertRecord],
    external_url: str = "",
) -> dict[str, Any]:
    """Alertmanager's webhook body, version "4" (what every Alertmanager receiver accepts)."""
    alerts = [_alert_body(a, external_url) for a in [*firing, *resolved]]
    return {
        "version": "4",
        "groupKey": key,
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": receiver,
        "groupLabels": dict(labels),
        "commonLabels": _common([a["labels"] for a in alerts]),
        "commonAnnotations": _common([a["annotations"] for a in alerts]),
        "externalURL": external_url,
        "alerts": alerts,
    }
