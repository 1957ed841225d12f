"""``shipyard monitors``: each pipeline's monitors and their last verdicts."""

from __future__ import annotations

import json
from typing import Any

import typer

from shipyard.cli.output import (
    console,
    flag,
    open_workspace,
    print_json,
    require,
    table,
    when,
)
from shipyard.statuses import CheckStatus

monitors_app = typer.Typer(
    help="The monitors of data, training, validation and serving pipelines.", no_args_is_help=True
)

STYLE: dict[str, str] = {
    CheckStatus.OK: "green",
    CheckStatus.WARNING: "yellow",
    CheckStatus.ALERT: "bold red",
    CheckStatus.ERROR: "red",
}


def _styled(status: str | None) -> str:
    if status is None:
        return "-"
    return f"[{STYLE.get(status, 'white')}]{status}[/]"


def _options(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(options.items())) or "-"


@monitors_app.command("list")
def list_monitors(as_json: bool = flag("--json", help="Print JSON.")) -> None:
    """Every pipeline's monitors, on or off, and the last result of each."""
    from shipyard.api.client import every
    from shipyard.cli.connect import client

    rows = list(every(client(), "monitors.list"))
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no pipelines yet: run one with `shipyard run FILE`")
        return
    monitors = table(
        "pipeline", "kind", "monitor", "on", "status", "when", "last result", free={"last result"}
    )
    for p in rows:
        for m in p["monitors"]:
            latest = m["last"][0] if m["last"] else None
            monitors.add_row(
                p["pipeline"],
                p["kind"],
                m["monitor"],
                "yes" if m["enabled"] else "off",
                _styled(m["status"]),
                when(latest["ts"]) if latest else "-",
                latest["summary"] if latest else "-",
            )
        if not p["monitors"]:
            monitors.add_row(p["pipeline"], p["kind"], "-", "-", "-", "-", "no monitors")
    console.print(monitors)


@monitors_app.command("show")
def show(
    pipeline: str = typer.Argument(..., help="The pipeline's name."),
    as_json: bool = flag("--json", help="Print JSON."),
) -> None:
    """One pipeline's monitors with their options and the last result per data set."""
    from shipyard.cli.connect import client

    p = client().call("monitors.get", pipeline=pipeline)
    if as_json:
        print_json(p)
        return
    console.print(f"[bold]{p['pipeline']}[/] ({p['kind']} pipeline)")
    monitors = table(
        "monitor", "on", "options", "subject", "status", "when", "result", free={"result"}
    )
    for m in p["monitors"]:
        results = m["last"] or [None]
        for r in results:
            monitors.add_row(
                m["monitor"],
                "yes" if m["enabled"] else "off",
                _options(m["options"]),
                r["subject"] if r else "-",
                _styled(r["status"]) if r else "-",
                when(r["ts"]) if r else "-",
                r["summary"] if r else "no result yet",
            )
    console.print(monitors)


@monitors_app.command("findings")
def list_findings(
    pipeline: str = typer.Option(None, "--pipeline", help="Only this pipeline's findings."),
    dataset: str = typer.Option(None, "--dataset", help="Only this data set's."),
    model: str = typer.Option(None, "--model", help="Only this served model's."),
    version: int = typer.Option(None, "--version", min=1, help="Only this version's (--model)."),
    monitor: str = typer.Option(None, "--monitor", help="Only this monitor's."),
    status: str = typer.Option(None, "--status", help="Only ok, warning, alert or error."),
    since: str = typer.Option(None, "--since", help="Only since then: 2h, 7d, 2026-11-29."),
    limit: int = typer.Option(50, "--limit", min=1, max=1000, help="How many, newest first."),
    cursor: str = typer.Option(None, "--cursor", help="Page: the cursor the last page printed."),
    as_json: bool = flag("--json", help="Print JSON."),
) -> None:
    """The monitors' findings, newest first; `shipyard monitors finding ID` shows one's
    evidence."""
    import time

    from shipyard.cli.audit import parse_since
    from shipyard.cli.connect import client

    found = client().call(
        "monitors.findings",
        pipeline=pipeline,
        dataset=dataset,
        model=model,
        version=version,
        monitor=monitor,
        status=status,
        since=parse_since(since, time.time()) if since is not None else None,
        limit=limit,
        cursor=cursor,
    )
    if as_json:
        print_json(found)
        return
    if not found["items"]:
        console.print("no findings match")
        return
    listing = table("id", "when", "monitor", "subject", "status", "summary", free={"summary"})
    for f in found["items"]:
        listing.add_row(
            str(f["id"]), when(f["ts"]), f["monitor"], f["subject"], _styled(f["status"]),
            f["summary"],
        )  # fmt: skip
    console.print(listing)
    if found["next"] is not None:
        console.print(f"older: add --cursor {found['next']}")


@monitors_app.command("finding")
def show_finding(
    finding_id: int = typer.Argument(..., min=1, help="The finding's id (monitors findings)."),
    as_json: bool = flag("--json", help="Print JSON."),
) -> None:
    """One finding with the evidence behind its verdict."""
    from shipyard.cli.connect import client

    f = client().call("monitors.finding", finding_id=finding_id)
    if as_json:
        print_json(f)
        return
    console.print(
        f"finding {f['id']}: {f['monitor']} on {f['subject']} {_styled(f['status'])} "
        f"{when(f['ts'])}" + (f" (run {f['run_id']})" if f["run_id"] else "")
    )
    console.print(f"  {f['summary']}", soft_wrap=True)
    console.print(json.dumps(f["evidence"], indent=2, sort_keys=True), soft_wrap=True, markup=False)


@monitors_app.command("serving")
def serving_monitors(
    model: str = typer.Argument(..., help="The served model to check."),
    url: str = typer.Option(
        None,
        "--url",
        help="The model server to probe (e.g. http://127.0.0.1:8000) for outage "
        "(default: every running `shipyard serve`).",
    ),
    as_json: bool = flag("--json", help="Print JSON."),
) -> None:
    """Run the serving monitors of MODEL's live version now and record their findings.

    Skew of inputs against the training reference, drift of predictions, data-type problems,
    latency, quality from late labels (and estimated before they arrive), outage (a probe of
    --url, else of every running model server), and the servers' use of their quota leases.
    """
    from shipyard.monitoring.serving import ServingMonitor
    from shipyard.registry import Registry
    from shipyard.serving.instances import live_instances

    ws = open_workspace(create=False)
    require(ws, "model", model)
    registry = Registry.of(ws)
    urls = [url] if url else [i.url for i in live_instances(ws.store, ws.clock.time())]
    checks = ServingMonitor(ws.store, registry).run(model, urls)
    if as_json:
        print_json(
            [
                {
                    "monitor": c.monitor,
                    "model": c.model,
                    "version": c.version,
                    "status": c.status,
                    "summary": c.summary,
                }
                for c in checks
            ]
        )
        return
    found = table(
        "monitor",
        "version",
        "status",
        "summary",
        title=f"serving monitors of {model}",
        free={"summary"},
    )
    for c in checks:
        found.add_row(c.monitor, str(c.version or "-"), _styled(c.status), c.summary)
    console.print(found)


def register(app: typer.Typer) -> None:
    app.add_typer(monitors_app, name="monitors")
