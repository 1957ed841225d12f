"""``shipyard audit``: read the audit chain, and check that nobody edited it."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime

import typer
from rich.markup import escape

from shipyard.cli.output import (
    console,
    err_console,
    flag,
    print_json,
    table,
    when,
)
from shipyard.errors import InvalidInput

audit_app = typer.Typer(
    help="The tamper-evident audit: who did what, and whether the record still reads as written.",
    no_args_is_help=True,
)

TAMPERED_EXIT = 3
"""``audit verify``'s exit code when the chain was tampered with (1: it could not check)."""
_AGO = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: float) -> float:
    """``2h`` / ``7d`` (that long ago), an ISO 8601 date or time (local unless it says), or
    epoch seconds → epoch seconds."""
    value = text.strip()
    if found := _AGO.match(value):
        return now - float(found.group(1)) * _UNIT_S[found.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise InvalidInput(
            f"--since {text!r}: give a time ago (30m, 2h, 7d), an ISO date or time "
            "(2026-11-29, 2026-11-29T08:00), or epoch seconds"
        ) from None


def parse_anchor(text: str) -> tuple[int, str]:
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise InvalidInput(f"--anchor {text!r}: SEQ:HASH as `audit verify` printed it")
    return int(seq), digest


@audit_app.command("list")
def list_command(
    action: str = typer.Option(
        None, "--action", help="Only this action (model.alias), or a family (rollout.*)."
    ),
    actor: str = typer.Option(None, "--actor", help="Only what this actor did."),
    subject: str = typer.Option(
        None, "--subject", help="Only events about KIND:ID (model:digits), or any kind's ID."
    ),
    since: str = typer.Option(None, "--since", help="Only since then: 2h, 7d, 2026-11-29."),
    before: int = typer.Option(None, "--before", min=1, help="Page: events before this seq."),
    limit: int = typer.Option(50, "--limit", min=1, max=1000, help="How many, newest first."),
    as_json: bool = flag("--json", help="Print JSON."),
) -> None:
    """The audit events, newest first: who did what to which thing, when, and in which mode."""
    from shipyard.cli.connect import client

    kind: str | None = None
    subject_id: str | None = subject
    if subject is not None and ":" in subject:
        kind, subject_id = subject.split(":", 1)
    found = client().call(
        "audit.list",
        action=action,
        actor=actor,
        subject_kind=kind or None,
        subject_id=subject_id or None,
        since=parse_since(since, time.time()) if since is not None else None,
        before=before,
        limit=limit,
    )
    events, next_before = found["items"], found["next_before"]
    if as_json:
        print_json({"events": events, "next_before": next_before})
        return
    if not events:
        filtered = any(x is not None for x in (action, actor, subject, since, before))
        console.print("no audit events match" if filtered else "no audit events yet")
        return
    listing = table(
        "seq", "when", "actor", "mode", "action", "subject", "details", free={"details"}
    )
    for e in events:
        listing.add_row(
            str(e["seq"]),
            when(e["time"]),
            e["actor"] or "-",
            e["mode"],
            e["action"],
            f"{e['subject']['kind']}:{e['subject']['id']}",
            json.dumps(e["details"], sort_keys=True, separators=(",", ":"), default=str),
        )
    console.print(listing)
    if next_before is not None:
        console.print(f"older: shipyard audit list --before {next_before}")


@audit_app.command("verify")
def verify_command(
    anchor: str = typer.Option(
        None, "--anchor", help="SEQ:HASH from an earlier verify, kept elsewhere: it must hold."
    ),
    as_json: bool = flag("--json", help="Print JSON."),
) -> None:
    """Walk the audit chain; name the first event that was edited, deleted, reordered or
    inserted (exit 3), or print the head to keep as the next --anchor."""
    from shipyard.cli.connect import client

    started = time.perf_counter()
    seq, digest = parse_anchor(anchor) if anchor else (None, None)
    verdict = client().call("audit.verify", anchor_seq=seq, anchor_hash=digest)
    took_s = time.perf_counter() - started
    tampering = verdict["tampering"]
    if as_json:
        print_json(verdict)
    elif tampering is None:
        head = verdict["head"]
        console.print(
            f"[green]✓[/] the audit chain is intact: {verdict['events']} events "
            f"checked in {took_s:.2f}s; head {head['seq']}:{head['hash']} "
            "(keep it elsewhere and pass it as --anchor next time)"
        )
    else:
        err_console.print(
            f"[bold red]✗ the audit chain was tampered with:[/] {escape(tampering['why'])}"
            f" ({verdict['events']} events before it are intact)",
            soft_wrap=True,
        )
    if tampering is not None:
        raise typer.Exit(TAMPERED_EXIT)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
