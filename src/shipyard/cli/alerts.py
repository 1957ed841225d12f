"""``shipyard alerts list|show|rules|silence|silences|unsilence|receivers|test|export``.

Every command but ``test`` goes through the control plane's operations (``alerts.*``), on the
server when one is named and in-process otherwise. ``--config FILE`` shows a file on this
machine instead of the configuration in force. ``test`` sends from this machine to a receiver of
the local configuration: a server never hands out a receiver's secrets, so it cannot be done
with what a server returns.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from shipyard.cli.output import console, err_console, flag, print_json, table, when
from shipyard.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from shipyard.alerting.config import AlertingConfig
    from shipyard.api.client import Client

alerts_app = typer.Typer(help="Alerts, their rules, silences and receivers.", no_args_is_help=True)
CONFIG_OPTION = typer.Option(None, "--config", help="alerting.yaml to use.")
STATES = ("pending", "firing", "resolved")
PAGE = 1000


@contextmanager
def _connected() -> Iterator[Client]:
    """``client()``, whose embedded workspace is closed when the command is done (a command run
    in-process, by a test or a notebook, must not leave PostgreSQL connections to the garbage
    collector)."""
    from shipyard.api.client import LocalClient
    from shipyard.cli.connect import client

    c = client()
    try:
        yield c
    finally:
        if isinstance(c, LocalClient):
            c.ws.store.dispose()


def _every(c: Client, name: str, **params: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every item of a paged list, and its first page (for what it says besides the items)."""
    first = c.call(name, limit=PAGE, **params)
    items, following = list(first["items"]), first["next"]
    while following is not None:
        more = c.call(name, limit=PAGE, cursor=following, **params)
        items.extend(more["items"])
        following = more["next"]
    return items, first


def _file_config(path: Path) -> AlertingConfig:
    """A configuration file on this machine (its default log receiver under the local home)."""
    from shipyard.alerting.config import load_config
    from shipyard.config import load_settings

    return load_config(load_settings().home, path)


def origin_line(origin: dict[str, Any]) -> str:
    """Where the configuration in force comes from, as one line."""
    if origin["daemon"] is None:
        return (
            f"config: {origin['source']} (no daemon has recorded the configuration it runs "
            "with; this is what `shipyard daemon` would load here)"
        )
    state = (
        "running"
        if origin["running"]
        else f"not running now; recorded {when(origin['recorded_at'])}"
    )
    return f"config: {origin['source']}, as loaded by daemon {origin['daemon']} ({state})"


@alerts_app.command("list")
def list_alerts(
    state: str = typer.Option("", help="Only this state: pending, firing or resolved."),
    limit: int = typer.Option(500, "--limit", min=1, max=1000, help="How many, oldest first."),
    cursor: str = typer.Option(None, "--cursor", help="Page: the cursor a previous list printed."),
    as_json: bool = flag("--json", help="Print JSON."),
) -> None:
    """Alerts that are pending, firing or recently resolved."""

    if state and state not in STATES:
        raise InvalidInput(f"--state must be pending, firing or resolved, not {state!r}")
    with _connected() as c:
        found = c.call("alerts.list", state=state or None, limit=limit, cursor=cursor)
    rows, following = found["items"], found["next"]
    more = f"more: shipyard alerts list --cursor '{following}'" if following else None
    if as_json:
        keys = ("fingerprint", "state", "labels", "annotations", "value")
        times = ("active_at", "fired_at", "resolved_at")
        print_json([{k: r[k] for k in (*keys, *times)} for r in rows])
        if more:
            err_console.print(escape(more), soft_wrap=True)
        return
    listing = table("fingerprint", "alert", "state", "since", "value", "summary", free={"summary"})
    for r in rows:
        listing.add_row(
            r["fingerprint"],
            r["labels"].get("alertname", r["rule"]),
            r["state"],
            when(r["fired_at"] or r["active_at"]),
            f"{r['value']:g}" if r["value"] is not None else "-",
            escape(str(r["annotations"].get("summary", ""))),
        )
    console.print(listing if rows else "no alerts")
    if more:
        console.print(escape(more), soft_wrap=True)


@alerts_app.command("show")
def show(
    fingerprint: str = typer.Argument(..., help="The alert's fingerprint (`alerts list`)."),
    as_json: bool = flag("--json", help="Print JSON."),
) -> None:
    """One alert: labels, annotations, its timeline and the silences muting it."""

    with _connected() as c:
        alert = c.call("alerts.get", fingerprint=fingerprint)
    if as_json:
        print_json(alert)
        return
    name = alert["labels"].get("alertname", alert["rule"])
    value = f"{alert['value']:g}" if alert["value"] is not None else "-"
    console.print(
        f"[bold]{escape(name)}[/] {alert['fingerprint']}: {alert['state']}, value {value}"
    )
    console.print(
        "labels: " + escape(" ".join(f'{k}="{v}"' for k, v in sorted(alert["labels"].items()))),
        soft_wrap=True,
    )
    for key, text in sorted(alert["annotations"].items()):
        console.print(f"{escape(key)}: {escape(str(text))}", soft_wrap=True)
    timeline = table("when", "event", "detail", free={"detail"})
    for e in alert["timeline"]:
        detail = ""
        if e["event"] == "notification":
            detail = f"{e['alert_status']} to {e['receiver']}: {e['status']}"
            detail += f" after {e['attempts']} attempt(s)"
            if e["last_error"]:
                detail += f" ({e['last_error']})"
        timeline.add_row(when(e["at"]), e["event"], escape(detail))
    console.print(timeline)
    for s in alert["silenced_by"]:
        console.print(
            f"silenced by {s['id']} until {when(s['ends_at'])} "
            f"({escape(s['createdBy'])}: {escape(s['comment'])})",
            soft_wrap=True,
        )


@alerts_app.command("rules")
def rules(
    config: Path | None = CONFIG_OPTION, as_json: bool = flag("--json", help="Print JSON.")
) -> None:
    """The rules in force (defaults and alerting.yaml) as the running daemon loaded them, with
    their PromQL equivalent."""
    from shipyard.api.ops.alerts import rule_items

    if config is not None:
        in_force, origin = rule_items(_file_config(config)), f"config: {config}"
    else:
        with _connected() as c:
            in_force, first = _every(c, "alerts.rules")
        origin = origin_line(first["config"])
    if as_json:
        print_json(in_force)
        return
    from shipyard.alerting.rules import format_duration

    listing = table("rule", "kind", "severity", "for", "expression", "from", free={"expression"})
    for r in in_force:
        listing.add_row(
            r["name"],
            r["kind"],
            r["severity"],
            format_duration(r["for_s"]) if r["for_s"] else "0",
            escape(r["promql"]),
            escape(r["origin"] or ""),
        )
    console.print(listing)
    console.print(escape(origin), soft_wrap=True)


@alerts_app.command("silence")
def silence(
    matchers: list[str] = typer.Argument(..., help='Matchers, e.g. alertname="DataDrift".'),
    duration: str = typer.Option("1h", "--for", help="How long: 30m, 2h, 1d."),
    comment: str = typer.Option(..., "--comment", "-c", help="Why."),
) -> None:
    """Mute the alerts these matchers select, for a while; records who and why."""

    with _connected() as c:
        made = c.call("alerts.silence", matchers=matchers, duration=duration, comment=comment)
    console.print(f"[green]✓[/] silence {made['id']} until {when(made['ends_at'])}")


@alerts_app.command("silences")
def silences(as_json: bool = flag("--json", help="Print JSON.")) -> None:
    """Every silence, active or not."""

    with _connected() as c:
        found, _ = _every(c, "alerts.silences")
    if as_json:
        keys = ("id", "matchers", "startsAt", "endsAt", "createdBy", "comment", "active")
        print_json([{k: s[k] for k in keys} for s in found])
        return
    from shipyard.alerting.matchers import Matcher

    listing = table("id", "matchers", "until", "by", "why", "active", free={"why"})
    for s in found:
        listing.add_row(
            s["id"],
            escape(" ".join(str(Matcher.from_dict(m)) for m in s["matchers"])),
            when(s["ends_at"]),
            escape(s["createdBy"]),
            escape(s["comment"]),
            "yes" if s["active"] else "no",
        )
    console.print(listing if found else "no silences")


@alerts_app.command("unsilence")
def unsilence(
    silence_id: str = typer.Argument(..., help="The silence's id (`shipyard alerts silences`)."),
) -> None:
    """End a silence now."""

    with _connected() as c:
        c.call("alerts.unsilence", silence_id=silence_id)
    console.print(f"[green]✓[/] silence {silence_id} expired")


@alerts_app.command("receivers")
def receivers(config: Path | None = CONFIG_OPTION) -> None:
    """The receivers the running daemon delivers to, and where they deliver."""
    from shipyard.api.ops.alerts import receiver_item

    if config is not None:
        found = [receiver_item(r) for r in _file_config(config).receivers.values()]
        origin = f"config: {config}"
    else:
        with _connected() as c:
            found, first = _every(c, "alerts.receivers")
        origin = origin_line(first["config"])
    configured = table("receiver", "type", "destination", free={"destination"})
    for r in found:
        configured.add_row(r["name"], r["type"], escape(r["destination"]))
    console.print(configured)
    console.print(escape(origin), soft_wrap=True)


@alerts_app.command("test")
def test(
    receiver: str = typer.Argument(..., help="A receiver of the configuration."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Send a test notification to RECEIVER now and say what happened."""
    from shipyard.alerting.grouping import rfc3339
    from shipyard.alerting.receivers import send
    from shipyard.api.ops.alerts import config_in_force
    from shipyard.cli.connect import target
    from shipyard.cli.output import open_workspace

    if config is not None:
        cfg = _file_config(config)
        now = time.time()
    else:
        where = target()
        if where is not None:
            raise InvalidInput(
                f"alerts test sends from this machine, and the server at {where.url} never "
                "hands out a receiver's secrets: pass --config FILE, or run it where the "
                "server's workspace is (SHIPYARD_URL= shipyard alerts test …)"
            )
        ws = open_workspace(create=False)
        try:
            cfg, _ = config_in_force(ws)
        finally:
            ws.store.dispose()
        now = ws.clock.time()
    target_receiver = cfg.receivers.get(receiver)
    if target_receiver is None:
        raise NotFound(
            "receiver",
            receiver,
            f"configured: {', '.join(sorted(cfg.receivers))}",
            candidates=cfg.receivers,
        )
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
    result = send(target_receiver, payload, f"test-{int(now * 1000)}")
    took_ms = (time.monotonic() - started) * 1000
    kind = target_receiver.type
    if result.ok:
        console.print(
            f"[green]✓[/] {receiver} ({kind}) accepted it in {took_ms:.0f} ms: "
            f"{escape(result.detail)}",
            soft_wrap=True,
        )
        return
    again = "would be retried" if result.retry else "would not be retried"
    console.print(
        f"[red]✗[/] {receiver} ({kind}) refused it: {escape(result.detail)} ({again})",
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
    if config is not None:
        from shipyard.alerting.export import prometheus_rule_file

        text = prometheus_rule_file(_file_config(config).rules)
    else:
        with _connected() as c:
            text = c.call("alerts.export")["text"]
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
