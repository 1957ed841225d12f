"""``/alerts``, ``/alert-rules``, ``/silences`` and ``/receivers``: what is firing, why, who
muted what, and where notifications go.

The rules and receivers shown are the configuration in force: the one the leading daemon
recorded when it took its lease, else what a daemon started on this workspace would load. A
receiver's destination is shown with its secrets redacted (:func:`redact_url`); a silence is
created or expired by its author's identity (``silences.write``: operators and admins, or a role
over the ``model:``/``pipeline:``/``pool:`` its matchers pin down).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import or_, select

from shipyard.api.operations import (
    Context,
    PageQuery,
    Params,
    keyset_page,
    operation,
    slice_page,
)
from shipyard.errors import ConfigError, InvalidInput, NotFound
from shipyard.identity import READ, SILENCES_WRITE

if TYPE_CHECKING:
    from shipyard.alerting.config import AlertingConfig
    from shipyard.alerting.matchers import Matcher
    from shipyard.alerting.receivers import Receiver
    from shipyard.alerting.silences import Silence
    from shipyard.workspace import Workspace

ALERTING_CONFIG = "alerting"
"""The name under which the daemon records the alerting configuration it loaded
(``shipyard.daemon.loop.ALERTING_CONFIG``; the server may not import the daemon, a face
beside it)."""
DAEMON_LEASE = "daemon"
"""The daemon's leader lease (``shipyard.daemon.leadership.LEADER``)."""
MAX_SILENCE_S = 366 * 86400
NOTIFICATIONS_SCANNED = 500
"""An alert's timeline reads at most this many of the notifications sent since it became active."""
SCOPED_LABELS = ("model", "pipeline", "pool")
"""Labels whose equality matcher narrows a silence to one object a role can be scoped to."""
REDACTED = "***"
_SECRET_SEGMENT = re.compile(r"^(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9_\-]{20,}$")


# -- the shapes ------------------------------------------------------------------------------


class AlertQuery(PageQuery):
    state: Literal["pending", "firing", "resolved"] | None = Field(
        None, description="Only alerts in this state."
    )


class SilenceQuery(PageQuery):
    active: bool | None = Field(None, description="Only silences active now (true) or not (false).")


class SilenceCreate(Params):
    matchers: list[str] = Field(
        ...,
        min_length=1,
        max_length=20,
        description='Alertmanager matchers: name="v", name!="v", name=~"re", name!~"re".',
    )
    duration: str = Field("1h", max_length=20, description="How long: 30m, 2h, 1d (at most 366d).")
    comment: str = Field(..., min_length=1, max_length=1000, description="Why.")

    @field_validator("matchers")
    @classmethod
    def _matchers_parse(cls, value: list[str]) -> list[str]:
        from shipyard.alerting.matchers import Matcher

        for text in value:
            if len(text) > 500:
                raise PydanticCustomError("matcher", "a matcher is at most 500 characters")
            try:
                Matcher.parse(text)
            except InvalidInput as exc:
                raise PydanticCustomError("matcher", str(exc)) from None
        return value

    @field_validator("duration")
    @classmethod
    def _duration_parses(cls, value: str) -> str:
        from shipyard.alerting.rules import parse_duration

        try:
            seconds = parse_duration(value)
        except InvalidInput as exc:
            raise PydanticCustomError("duration", str(exc)) from None
        if not 0 < seconds <= MAX_SILENCE_S:
            raise PydanticCustomError("duration", "a silence lasts more than 0s and at most 366d")
        return value


# -- alerts ----------------------------------------------------------------------------------


def alert_item(record: Any) -> dict[str, Any]:
    return {
        "fingerprint": record.fingerprint,
        "rule": record.rule,
        "state": record.state,
        "labels": dict(record.labels),
        "annotations": dict(record.annotations),
        "value": record.value,
        "active_at": record.active_at,
        "fired_at": record.fired_at,
        "last_true_at": record.last_true_at,
        "resolved_at": record.resolved_at,
    }


@operation("GET", "/alerts", name="alerts.list")
def list_alerts(ctx: Context, *, query: AlertQuery) -> dict[str, Any]:
    """Alerts that are pending, firing or recently resolved, oldest first.

    Paged by a keyset cursor (when the alert became active, then its fingerprint)."""
    from shipyard.store.alerting import AlertRecord

    ctx.require(READ)
    statement = select(AlertRecord)
    if query.state is not None:
        statement = statement.where(AlertRecord.state == query.state)
    order = (AlertRecord.active_at, AlertRecord.fingerprint)
    return keyset_page(ctx, "alerts.list", statement, order, query, alert_item)


@operation("GET", "/alerts/{fingerprint}", name="alerts.get")
def get_alert(ctx: Context, *, fingerprint: str) -> dict[str, Any]:
    """One alert: its labels, annotations, timeline (pending, firing, resolved and each
    notification that carried it) and the silences muting it now."""
    from shipyard.alerting.silences import active_silences
    from shipyard.store.alerting import AlertRecord, NotificationRecord

    ctx.require(READ)
    now = ctx.now
    with ctx.ws.store.session() as session:
        record = session.get(AlertRecord, fingerprint)
        if record is None:
            raise NotFound("alert", fingerprint, "see `shipyard alerts list`")
        alert = alert_item(record)
        sent = list(
            session.scalars(
                select(NotificationRecord)
                .where(NotificationRecord.created_at >= record.active_at)
                .order_by(NotificationRecord.created_at.desc())
                .limit(NOTIFICATIONS_SCANNED)
            )
        )
        muting = [s for s in active_silences(session, now) if s.mutes(record.labels, now)]
    timeline: list[dict[str, Any]] = [{"at": alert["active_at"], "event": "pending"}]
    if alert["fired_at"] is not None:
        timeline.append({"at": alert["fired_at"], "event": "firing"})
    for n in reversed(sent):
        told = [a for a in n.payload.get("alerts", []) if a.get("fingerprint") == fingerprint]
        if told:
            timeline.append(
                {
                    "at": n.created_at,
                    "event": "notification",
                    "receiver": n.receiver,
                    "alert_status": told[0].get("status"),
                    "status": n.status,
                    "attempts": n.attempts,
                    "delivered_at": n.delivered_at,
                    "last_error": n.last_error,
                }
            )
    if alert["resolved_at"] is not None:
        timeline.append({"at": alert["resolved_at"], "event": "resolved"})
    timeline.sort(key=lambda e: e["at"])
    return {
        **alert,
        "timeline": timeline,
        "silenced_by": [silence_item(s, now) for s in muting],
    }


# -- the configuration in force --------------------------------------------------------------


def config_in_force(ws: Workspace) -> tuple[AlertingConfig, dict[str, Any]]:
    """The alerting configuration in force and where it comes from: the one the daemon recorded
    when it took the leader lease, else what a daemon started on this workspace would load."""
    from shipyard.alerting.config import load_config
    from shipyard.store.alerting import DaemonConfigRecord, LeaderLease

    home = ws.settings.home
    now = ws.clock.time()
    with ws.store.session() as session:
        recorded = session.get(DaemonConfigRecord, ALERTING_CONFIG)
        lease = session.get(LeaderLease, DAEMON_LEASE)
        leader = lease.holder if lease is not None and lease.expires_at > now else None
        if recorded is not None:
            source, holder, text = recorded.source, recorded.holder, recorded.text
            recorded_at = recorded.recorded_at
    if recorded is None:
        cfg = load_config(home)
        return cfg, {"source": cfg.source, "daemon": None, "running": False, "recorded_at": None}
    cfg = _recorded_config(text, source, home)
    origin = {
        "source": source,
        "daemon": holder,
        "running": leader == holder,
        "recorded_at": recorded_at,
    }
    return cfg, origin


@functools.lru_cache(maxsize=4)
def _recorded_config(text: str | None, source: str, home: Path) -> AlertingConfig:
    """The daemon's recorded configuration, built once per text (every alerts page reads it;
    :class:`AlertingConfig` is frozen)."""
    import yaml

    from shipyard.alerting.config import build_config
    from shipyard.config import yaml_error_line

    try:
        data = yaml.safe_load(text) if text else {}
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"the daemon's recorded {source} is not valid YAML: {yaml_error_line(exc)}"
        ) from None
    return build_config(data, home=home, source=source)


def rule_items(cfg: AlertingConfig) -> list[dict[str, Any]]:
    from shipyard.alerting.export import promql
    from shipyard.alerting.state import rule_key

    return [
        {
            "name": r.name,
            "kind": r.kind,
            "severity": r.severity,
            "enabled": r.enabled,
            "for_s": r.for_s,
            "promql": promql(r),
            "origin": cfg.rule_origin.get(rule_key(r)),
        }
        for r in cfg.rules
    ]


def redact_url(url: str, *, whole_path: bool = False) -> str:
    """``url`` without its secrets: the user-info (``user:password@``), every query value, and
    path segments that look like tokens (20+ letters and digits, as in Slack's and Discord's
    webhook URLs); ``whole_path`` hides the whole path (a Slack incoming-webhook URL is itself
    the credential: "Your webhook URL contains a secret", api.slack.com/messaging/webhooks)."""
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if parts.port is not None:
            netloc = f"{netloc}:{parts.port}"
    except ValueError:
        return REDACTED
    if parts.username is not None or parts.password is not None:
        netloc = f"{REDACTED}@{netloc}"
    if whole_path and parts.path not in ("", "/"):
        path = f"/{REDACTED}"
    else:
        path = "/".join(
            REDACTED if _SECRET_SEGMENT.match(seg) else seg for seg in parts.path.split("/")
        )
    query = urlencode(
        [(k, REDACTED) for k, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*"
    )
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def receiver_item(receiver: Receiver) -> dict[str, Any]:
    """A receiver as anyone who may read may see it: no credential in its URL, no header value."""
    if receiver.type in ("webhook", "slack", "alertmanager"):
        destination = redact_url(receiver.url, whole_path=receiver.type == "slack")
    else:
        destination = receiver.describe()
    return {
        "name": receiver.name,
        "type": receiver.type,
        "destination": destination,
        "headers": {name: REDACTED for name in receiver.headers},
        "timeout_s": receiver.timeout_s,
    }


@operation("GET", "/alert-rules", name="alerts.rules")
def list_rules(ctx: Context, *, query: PageQuery) -> dict[str, Any]:
    """The alert rules in force (defaults and alerting.yaml) with their PromQL equivalent, and
    where the configuration comes from."""
    ctx.require(READ)
    cfg, origin = config_in_force(ctx.ws)
    return slice_page("alerts.rules", rule_items(cfg), query, config=origin)


@operation("GET", "/alert-rules/export", name="alerts.export")
def export_rules(ctx: Context) -> dict[str, Any]:
    """The rules in force as a Prometheus rule file (``promtool check rules`` accepts it)."""
    from shipyard.alerting.export import prometheus_rule_file

    ctx.require(READ)
    cfg, origin = config_in_force(ctx.ws)
    return {"format": "prometheus", "text": prometheus_rule_file(cfg.rules), "config": origin}


@operation("GET", "/receivers", name="alerts.receivers")
def list_receivers(ctx: Context, *, query: PageQuery) -> dict[str, Any]:
    """The receivers the daemon delivers to, with their secrets redacted."""
    ctx.require(READ)
    cfg, origin = config_in_force(ctx.ws)
    items = [receiver_item(r) for r in cfg.receivers.values()]
    return slice_page("alerts.receivers", items, query, config=origin)


# -- silences --------------------------------------------------------------------------------


def silence_item(silence: Silence, now: float) -> dict[str, Any]:
    from shipyard.alerting.grouping import rfc3339

    return {
        "id": silence.id,
        "matchers": [m.to_dict() for m in silence.matchers],
        "startsAt": rfc3339(silence.starts_at),
        "endsAt": rfc3339(silence.ends_at),
        "starts_at": silence.starts_at,
        "ends_at": silence.ends_at,
        "createdBy": silence.created_by,
        "comment": silence.comment,
        "active": silence.active(now),
    }


def _require_silencing(ctx: Context, matchers: Iterable[Matcher]) -> None:
    """``silences.write`` over everything, or over an object the matchers pin down (a silence
    with ``model="digits"`` mutes only that model's alerts)."""
    subjects = [
        f"{m.name}:{m.value}"
        for m in matchers
        if m.name in SCOPED_LABELS and m.is_equal and not m.is_regex and m.value
    ]
    if any(ctx.principal.allows(SILENCES_WRITE, s) for s in subjects):
        return
    ctx.require(SILENCES_WRITE)


@operation("GET", "/silences", name="alerts.silences")
def list_silences(ctx: Context, *, query: SilenceQuery) -> dict[str, Any]:
    """Silences, oldest first, active or not (paged by creation time, then id)."""
    from shipyard.alerting.silences import Silence
    from shipyard.store.alerting import SilenceRecord

    ctx.require(READ)
    now = ctx.now
    statement = select(SilenceRecord)
    if query.active is True:
        statement = statement.where(SilenceRecord.starts_at <= now, SilenceRecord.ends_at > now)
    elif query.active is False:
        statement = statement.where(
            or_(SilenceRecord.starts_at > now, SilenceRecord.ends_at <= now)
        )
    order = (SilenceRecord.created_at, SilenceRecord.id)
    return keyset_page(
        ctx,
        "alerts.silences",
        statement,
        order,
        query,
        lambda r: silence_item(Silence.from_record(r), now),
    )


@operation("POST", "/silences", name="alerts.silence")
def create_silence(ctx: Context, *, body: SilenceCreate) -> dict[str, Any]:
    """Mute the alerts these matchers select from now for `duration`; the audit records who
    and why (operators, admins, or a role over the model/pipeline/pool the matchers name)."""
    from shipyard.alerting.matchers import parse_matchers
    from shipyard.alerting.rules import parse_duration
    from shipyard.alerting.silences import create_silence as create

    matchers = parse_matchers(body.matchers)
    _require_silencing(ctx, matchers)
    now = ctx.now
    with ctx.ws.store.session(immediate=True) as session:
        made = create(
            session,
            matchers,
            starts_at=now,
            ends_at=now + parse_duration(body.duration),
            created_by=ctx.actor,
            comment=body.comment,
            now=now,
        )
    return silence_item(made, now)


@operation("POST", "/silences/{silence_id}/expire", name="alerts.unsilence")
def expire_silence(ctx: Context, *, silence_id: str) -> dict[str, Any]:
    """End a silence now (whoever may create it may end it)."""
    from shipyard.alerting.silences import Silence
    from shipyard.alerting.silences import expire_silence as expire
    from shipyard.store.alerting import SilenceRecord

    now = ctx.now
    with ctx.ws.store.session(immediate=True) as session:
        record = session.get(SilenceRecord, silence_id)
        if record is None:
            raise NotFound("silence", silence_id, "see `shipyard alerts silences`")
        _require_silencing(ctx, Silence.from_record(record).matchers)
        ended = expire(session, silence_id, actor=ctx.actor, now=now)
    return silence_item(ended, now)
