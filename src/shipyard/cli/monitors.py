"""``shipyard monitors``: each pipeline's monitors and their last verdicts."""

from __future__ import annotations

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
    from shipyard.monitoring.findings import overview

    rows = overview(open_workspace(create=False).store)
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
    from shipyard.monitoring.findings import overview

    ws = open_workspace(create=False)
    require(ws, "pipeline", pipeline)
    rows = overview(ws.store, pipeline)
    if as_json:
        print_json(rows[0])
        return
    p = rows[0]
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
