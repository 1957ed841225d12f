"""``shipyard trace TRACE_ID``: follow one request's W3C trace to what it caused."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from shipyard.cli.output import console, flag, print_json, when
from shipyard.errors import InvalidInput, NotFound


def trace(
    trace_id: str = typer.Argument(
        ...,
        help="A W3C trace id (32 hex digits), or a whole traceparent / traceresponse value.",
    ),
    log_files: list[Path] = typer.Option(
        None,
        "--log",
        help="Also search these JSON log files (a server's or the daemon's stderr, "
        "--log-format json) for lines of the trace (repeatable).",
    ),
    as_json: bool = flag("--json", help="Machine-readable output."),
) -> None:
    """Follow a request's trace: the model server's answer to it, the window it was flushed
    with, the canary verdicts that named it, the rollback's audit event, and the control-plane
    decisions made by requests sent in it.

    Every answer of `shipyard serve` and `shipyard server` carries a `traceresponse` header
    (00-TRACE_ID-SPAN_ID-FLAGS): send your own `traceparent` and the trace is yours. A model
    server keeps the trace of every refused or failed request, and of every request sent with a
    traceparent; a failing canary look names the traces of the canary's failed and slowest
    requests; an approval or a rollback made through the control plane with a traceparent
    carries its trace in its audit event. So, from a bad answer's traceresponse:

        shipyard trace TRACE_ID --log serve.log --log daemon.log

    With SHIPYARD_URL (or a login) it asks the server; the --log files are read here.
    Exits 1 when nothing on record names the trace.
    """
    from shipyard.cli.connect import client
    from shipyard.deploy.tracing import trace_id_of
    from shipyard.observability.logs import lines_naming

    wanted = trace_id_of(trace_id)
    for path in log_files or []:
        if not path.is_file():
            raise InvalidInput(f"--log {path}: no such file")
    report = client().call("traces.show", trace_id=wanted)
    lines = [
        *lines_naming(log_files or [], "trace_id", wanted),
        *lines_naming(log_files or [], "trace_ids", wanted),
    ]
    lines.sort(key=lambda doc: float(doc.get("ts", 0.0)))
    found = bool(report.get("found")) or bool(lines)
    if as_json:
        print_json({**report, "log_lines": lines})
        if not found:
            raise typer.Exit(1)
        return
    if not found:
        raise NotFound("trace", wanted, "no request, verdict, audit event or log line names it")
    console.print(f"trace {wanted}", soft_wrap=True)
    for c in report["requests"]:
        console.print(
            f"  {when(c['ts'])}  request {escape(c['request_id'])} → {c['model']} "
            f"v{c['version']}: {c['status']} in {c['latency_ms']:.1f} ms (span {c['span_id']}, "
            f"worker {escape(c['worker'])})",
            soft_wrap=True,
        )
    for w in report["windows"]:
        console.print(
            f"  {when(w['window_end'])}  flushed in window {w['id']} of {w['model']} "
            f"v{w['version']} ({w['requests']} requests, {w['errors']} errors, "
            f"{w['data_errors']} refused)",
            soft_wrap=True,
        )
    for v in report["verdicts"]:
        failed = f" ({', '.join(v['failed_metrics'])})" if v["failed_metrics"] else ""
        console.print(
            f"  {when(v['ts'])}  canary verdict of rollout {v['rollout_id']} ({v['model']} "
            f"v{v['version']}), step {v['step_index'] + 1} look {v['look']}: "
            f"{v['outcome']}{failed}",
            soft_wrap=True,
        )
    for e in report["events"]:
        details = e.get("details") or {}
        subject = e.get("subject") or {}
        why = details.get("why") or details.get("reason") or ""
        via = f" (request {details['request_id']})" if details.get("trace_id") == wanted else ""
        console.print(
            f"  {when(e['time'])}  audit #{e['seq']} {e['action']} of "
            f"{escape(str(subject.get('kind')))} {escape(str(subject.get('id')))} by "
            f"{escape(e['actor'])}{escape(via)}: {escape(str(why))}",
            soft_wrap=True,
        )
    for doc in lines:
        console.print(
            f"  {when(float(doc.get('ts', 0.0)))}  log {escape(str(doc.get('file')))}: "
            f"[{doc.get('level', '')}] {escape(str(doc.get('message', '')))}",
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    app.command("trace")(trace)
