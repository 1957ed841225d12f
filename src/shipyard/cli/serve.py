"""``shipyard serve``: the model server; ``shipyard serving instances``: the servers on record."""

from __future__ import annotations

import typer

from shipyard.cli.output import console, flag, open_workspace, print_json, require, when
from shipyard.observability.logs import FORMAT_ENV

serving_app = typer.Typer(help="The model servers on record.", no_args_is_help=True)


def serve(
    host: str = typer.Option(None, "--host", help="Address to listen on (default: settings)."),
    port: int = typer.Option(
        None, "--port", min=0, max=65535, help="Port (default: settings, 8000; 0: a free one)."
    ),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="Worker processes."),
    model: str = typer.Option(None, "--model", help="The model /invocations answers for."),
    no_monitoring: bool = flag(
        "--no-monitoring", help="Serve without windows, profiles or request logs."
    ),
    pool: str = typer.Option(
        None, "--pool", help="Run on a lease in this quota pool (refused if it cannot fit)."
    ),
    cpu: float = typer.Option(
        None, "--cpu", min=0.001, help="CPUs to ask of --pool (default: 1 per worker)."
    ),
    memory: str = typer.Option(
        None, "--memory", help="Memory to ask of --pool, e.g. 1Gi (default: 512Mi per worker)."
    ),
    wait: float = typer.Option(
        60.0, "--wait", min=0, help="Seconds to wait for --pool to have room before giving up."
    ),
    auth: list[str] = typer.Option(
        None,
        "--auth",
        help="Predictions of this model need a token allowed to predict over model:NAME "
        "(repeatable; '*': every model). Feedback always needs one (operator).",
    ),
    log_level: str = typer.Option(
        "warning",
        "--log-level",
        help="warning: failed requests (model errors) and the server's trouble; info: also each "
        "refused request; debug: also each answered one (costs throughput).",
    ),
    log_format: str = typer.Option(
        "json",
        "--log-format",
        envvar=FORMAT_ENV,
        help="json: one JSON object per line on stderr (ts, level, message, request_id, "
        "trace_id, span_id, model, version, status, latency_ms); text: for a terminal.",
    ),
) -> None:
    """Serve every model whose default alias points at a version (OIP V2 and MLflow scoring).

    Changes to what serves a model (its default alias, or deploy's traffic split once it was
    deployed: `shipyard models list` says which) are picked up within a second, without a
    restart. With --pool the server holds a quota lease while it runs, reports its measured
    CPU and memory on it, and releases it when stopped. Worker processes end with the server;
    a server that was killed is found and marked stopped by the next one that starts, or by
    the daemon (see `shipyard serving instances`).

    Posting labels (/v2/models/NAME/feedback) needs `Authorization: Bearer <token>` of an
    identity allowed to post feedback over model:NAME (operator); with --auth NAME, so do
    NAME's predictions (any role over model:NAME). Tokens come from `shipyard token create`.

    Every answer carries X-Request-Id and a W3C traceresponse header; send a traceparent to
    put the request in your own trace. `shipyard trace TRACE_ID` follows a request to the
    canary verdict and the rollback it caused. With OTEL_EXPORTER_OTLP_ENDPOINT set (and the
    otel extra installed) the log lines also go to that OpenTelemetry collector.
    """
    from shipyard.errors import InvalidInput
    from shipyard.observability.logs import configure
    from shipyard.observability.otlp import otlp_handler
    from shipyard.quota import parse_quantity
    from shipyard.serving.doors import EVERY_MODEL, check_guarded
    from shipyard.serving.server import free_port, run

    configure(log_format, log_level)
    otlp_handler()
    ws = open_workspace(create=model is None)  # a model to serve needs a workspace with it
    require(ws, "model", model)  # an unknown name is one line, before anything listens
    guarded = check_guarded(auth or ())
    for name in sorted(guarded - {EVERY_MODEL}):
        require(ws, "model", name)  # a typo must not leave the real model open
    settings = ws.settings
    host = host or settings.serving.host
    port = settings.serving.port if port is None else port
    if pool is None and (cpu is not None or memory is not None):
        raise InvalidInput("--cpu and --memory size the lease of --pool: give --pool too")
    if memory is not None:
        parse_quantity(memory, what="--memory")  # a bad size fails before anything
    if port == 0:
        port = free_port(host)
    run(
        host,
        port,
        workers,
        default_model=model,
        monitoring=not no_monitoring,
        auth=tuple(sorted(guarded)),
        log_level=log_level,
        log_format=log_format,
        pool=pool,
        cpu=cpu,
        memory=memory,
        wait_s=wait,
        announce=lambda line: console.print(line, soft_wrap=True),
        ws=ws,
    )


@serving_app.command("instances")
def instances(
    include_stopped: bool = flag("--all", help="Show stopped servers too, with why each stopped."),
    as_json: bool = flag("--json", help="Machine-readable output."),
) -> None:
    """The model servers on record: live ones, stale ones (killed, or silent past their ttl:
    the next `shipyard serve` marks them stopped) and, with --all, stopped ones."""
    from shipyard.serving.instances import list_instances

    ws = open_workspace()
    records = list_instances(ws.store, ws.clock.time(), include_stopped=include_stopped)
    if as_json:
        print_json(
            [
                {
                    "id": r.id,
                    "url": r.url,
                    "state": r.state,
                    "why": r.why or r.stop_reason,
                    "machine": r.machine,
                    "pid": r.pid,
                    "workers": r.workers,
                    "models": r.models,
                    "pool": r.pool,
                    "lease_id": r.lease_id,
                    "lease_status": r.lease_status,
                    "started_at": r.started_at,
                    "heartbeat_at": r.heartbeat_at,
                    "stopped_at": r.stopped_at,
                }
                for r in records
            ]
        )
        return
    if not records:
        console.print(
            "no model servers on record"
            if include_stopped
            else "no model servers running (--all shows stopped ones)"
        )
        return
    for r in records:
        colour = {"live": "green", "stale": "yellow"}.get(r.state, "dim")
        lease = f", lease {r.lease_id} in {r.pool} ({r.lease_status})" if r.lease_id else ""
        console.print(
            f"[{colour}]{r.state}[/] {r.url}  pid {r.pid} on {r.machine}, {r.workers} worker(s), "
            f"since {when(r.started_at)}{lease}",
            soft_wrap=True,
        )
        if r.state != "live":
            stopped = f"stopped {when(r.stopped_at)}: " if r.stopped_at is not None else ""
            console.print(
                f"    {stopped}{r.why or r.stop_reason or 'clean shutdown'}", soft_wrap=True
            )
        if r.models:
            console.print(f"    serves {', '.join(r.models)}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.add_typer(serving_app, name="serving")
