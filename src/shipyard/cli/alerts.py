"""``shipyard alerts list|rules|silence|silences|unsilence|receivers|test|export``."""

from __future__ import annotations

import time
from pathlib import Path

import typer
import yaml
from rich.markup import escape
from sqlalchemy import select

from shipyard.alerting.config import AlertingConfig, build_config, load_config
from shipyard.alerting.export import prometheus_rule_file, promql
from shipyard.alerting.grouping import rfc3339
from shipyard.alerting.matchers import parse_matchers
from shipyard.alerting.receivers import send
from shipyard.alerting.rules import format_duration, parse_duration
from shipyard.alerting.silences import all_silences, create_silence, expire_silence
from shipyard.alerting.state import rule_key
from shipyard.cli.output import console, flag, open_workspace, print_json, table, when
from shipyard.config import yaml_error_line
from shipyard.daemon import ALERTING_CONFIG, current_leader, recorded_config
from shipyard.errors import ConfigError, InvalidInput, NotFound
from shipyard.statuses import AlertState
from shipyard.store.alerting import AlertRecord
from shipyard.workspace import Workspace

alerts_app = typer.Typer(help="Alerts, their rules, silences and receivers.", no_args_is_help=True)
CONFIG_OPTION = typer.Option(None, "--config", help="alerting.yaml to use.")


def _config(ws: Workspace, path: Path | None) -> AlertingConfig:
    return _config_and_origin(ws, path)[0]


def _config_and_origin(ws: Workspace, path: Path | None) -> tuple[AlertingConfig, str]:
    """The configuration to show, and a line saying where it comes from: the file given, else
    the one the daemon recorded when it took the leader lease, else what a daemon started here
    now would load."""
    home = ws.settings.home
    if path is not None:
        return load_config(home, path), f"config: {path}"
    recorded = recorded_config(ws.store, ALERTING_CONFIG)
    if recorded is None:
        cfg = load_config(home)
        return cfg, (
            f"config: {cfg.source} (no daemon has recorded the configuration it runs with; "
            "this is what `shipyard daemon` would load here)"
        )
    try:
        data = yaml.safe_load(recorded.text) if recorded.text else {}
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"the daemon's recorded {recorded.source} is not valid YAML: {yaml_error_line(exc)}"
        ) from None
    cfg = build_config(data, home=home, source=recorded.source)
    leader = current_leader(ws.store, ws.clock.time())
    state = (
        "running"
        if leader is not None and leader.holder == recorded.holder
        else f"not running now; recorded {when(recorded.recorded_at)}"
    )
    return cfg, f"config: {recorded.source}, as loaded by daemon {recorded.holder} ({state})"


@alerts_app.command("list")
def list_alerts(
    state: str = typer.Option("", help="Only this state: pending, firing or resolved."),
    as_json: bool = flag("--json", help="Print JSON."),
) -> None:
    """Alerts that are pending, firing or recently resolved."""
    if state and state not in (AlertState.PENDING, AlertState.FIRING, AlertState.RESOLVED):
        raise InvalidInput(f"--state must be pending, firing or resolved, not {state!r}")
    ws = open_workspace(create=False)
    with ws.store.session() as session:
        query = select(AlertRecord).order_by(AlertRecord.active_at)
        if state:
            query = query.where(AlertRecord.state == state)
        rows = list(session.scalars(query))
    if as_json:
        print_json(
            [
                {
                    "fingerprint": r.fingerprint,
                    "state": r.state,
                    "labels": r.labels,
                    "annotations": r.annotations,
                    "value": r.value,
                    "active_at": r.active_at,
                    "fired_at": r.fired_at,
                    "resolved_at": r.resolved_at,
                }
                for r in rows
            ]
        )
        return
    found = table("fingerprint", "alert", "state", "since", "value", "summary", free={"summary"})
    for r in rows:
        found.add_row(
            r.fingerprint,
            r.labels.get("alertname", r.rule),
            r.state,
            when(r.fired_at or r.active_at),
            f"{r.value:g}" if r.value is not None else "-",
            r.annotations.get("summary", ""),
        )
    console.print(found if rows else "no alerts")


@alerts_app.command("rules")
def rules(
    config: Path | None = CONFIG_OPTION, as_json: bool = flag("--json", help="Print JSON.")
) -> None:
    """The rules in force (defaults and alerting.yaml) as the running daemon loaded them, with
    their PromQL equivalent."""
    cfg, origin = _config_and_origin(open_workspace(create=False), config)
    if as_json:
        print_json(
            [
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
        )
        return
    in_force = table("rule", "kind", "severity", "for", "expression", "from", free={"expression"})
    for r in cfg.rules:
        in_force.add_row(
            r.name,
            r.kind,
            r.severity,
            format_duration(r.for_s) if r.for_s else "0",
            promql(r),
            cfg.rule_origin.get(rule_key(r), ""),
        )
    console.print(in_force)
    console.print(escape(origin), soft_wrap=True)


@alerts_app.command("silence")
def silence(
    matchers: list[str] = typer.Argument(..., help='Matchers, e.g. alertname="DataDrift".'),
    duration: str = typer.Option("1h", "--for", help="How long: 30m, 2h, 1d."),
    comment: str = typer.Option(..., "--comment", "-c", help="Why."),
) -> None:
    """Mute the alerts these matchers select, for a while; records who and why."""
    ws = open_workspace()
    parsed = parse_matchers(matchers)
    now = ws.clock.time()
    with ws.store.session(immediate=True) as session:
        made = create_silence(
            session,
            parsed,
            starts_at=now,
            ends_at=now + parse_duration(duration),
            created_by=ws.actor,
            comment=comment,
            now=now,
        )
    console.print(f"[green]✓[/] silence {made.id} until {when(made.ends_at)}")


@alerts_app.command("silences")
def silences(as_json: bool = flag("--json", help="Print JSON.")) -> None:
    """Every silence, active or not."""
    ws = open_workspace(create=False)
    with ws.store.session() as session:
        found = all_silences(session)
    now = ws.clock.time()
    if as_json:
        print_json(
            [
                {
                    "id": s.id,
                    "matchers": [m.to_dict() for m in s.matchers],
                    "startsAt": rfc3339(s.starts_at),
                    "endsAt": rfc3339(s.ends_at),
                    "createdBy": s.created_by,
                    "comment": s.comment,
                    "active": s.active(now),
                }
                for s in found
            ]
        )
        return
    listing = table("id", "matchers", "until", "by", "why", "active", free={"why"})
    for s in found:
        listing.add_row(
            s.id,
            " ".join(str(m) for m in s.matchers),
            when(s.ends_at),
            s.created_by,
            s.comment,
            "yes" if s.active(now) else "no",
        )
    console.print(listing if found else "no silences")


@alerts_app.command("unsilence")
def unsilence(
    silence_id: str = typer.Argument(..., help="The silence's id (`shipyard alerts silences`)."),
) -> None:
    """End a silence now."""
    ws = open_workspace(create=False)
    with ws.store.session(immediate=True) as session:
        expire_silence(session, silence_id, actor=ws.actor, now=ws.clock.time())
    console.print(f"[green]✓[/] silence {silence_id} expired")


@alerts_app.command("receivers")
def receivers(config: Path | None = CONFIG_OPTION) -> None:
    """The receivers the running daemon delivers to, and where they deliver."""
    cfg, origin = _config_and_origin(open_workspace(create=False), config)
    configured = table("receiver", "type", "destination", free={"destination"})
    for r in cfg.receivers.values():
        configured.add_row(r.name, r.type, r.describe())
    console.print(configured)
    console.print(escape(origin), soft_wrap=True)


@alerts_app.command("test")
def test(
    receiver: str = typer.Argument(..., help="A receiver of the configuration."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Send a test notification to RECEIVER now and say what happened."""
    ws = open_workspace(create=False)
    cfg = _config(ws, config)
    target = cfg.receivers.get(receiver)
    if target is None:
        raise NotFound(
            "receiver",
            receiver,
            f"configured: {', '.join(sorted(cfg.receivers))}",
            candidates=cfg.receivers,
        )
    now = ws.clock.time()
    labels = {"alertname": "ShipyardTest", "severity": "info"}
    payload = {
        "version": "4",
        "groupKey": f'{receiver}:{{alertname="ShipyardTest"}}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": receiver,
        "groupLabels": {"alertname": "ShipyardTest"},
        "commonLabels": labels,
        "commonAnnotations": {"summary": "Test notification from shipyard alerts test"},
        "externalURL": cfg.external_url,
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": "Test notification from shipyard alerts test"},
                "startsAt": rfc3339(now),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": "0000000000000000",
            }
        ],
    }
    started = time.monotonic()
    result = send(target, payload, f"test-{int(now * 1000)}")
    took_ms = (time.monotonic() - started) * 1000
    if result.ok:
        console.print(
            f"[green]✓[/] {receiver} ({target.type}) accepted it in {took_ms:.0f} ms: "
            f"{result.detail}",
            soft_wrap=True,
        )
        return
    again = "would be retried" if result.retry else "would not be retried"
    console.print(
        f"[red]✗[/] {receiver} ({target.type}) refused it: {result.detail} ({again})",
        soft_wrap=True,
    )
    raise typer.Exit(1)


@alerts_app.command("export")
def export(
    fmt: str = typer.Option("prometheus", "--format", help="Only 'prometheus' for now."),
    output: Path | None = typer.Option(None, "--output", "-o", help="File to write."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Write the rules as a Prometheus rule file (``promtool check rules`` accepts it)."""
    if fmt != "prometheus":
        raise InvalidInput(f"--format must be 'prometheus', not {fmt!r}")
    text = prometheus_rule_file(_config(open_workspace(create=False), config).rules)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot write {output}: {exc}") from None
    console.print(f"[green]✓[/] wrote {output}")


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")
