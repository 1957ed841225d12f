"""``shipyard server``: the control plane, an authenticated HTTP API over the workspace."""

from __future__ import annotations

import typer

from shipyard.cli.output import console, err_console, open_workspace
from shipyard.errors import InvalidInput
from shipyard.observability.logs import FORMAT_ENV


def server(
    host: str = typer.Option(None, help="Address to listen on (default: server.host, 127.0.0.1)."),
    port: int = typer.Option(
        None, min=0, max=65535, help="Port (default: server.port, 8600; 0 picks a free one)."
    ),
    workers: int = typer.Option(
        1,
        min=1,
        max=64,
        help="Worker processes; for a team, one or two per core (each runs server.threads "
        "operations at once).",
    ),
    log_level: str = typer.Option("warning", help="Log level (the server's and Uvicorn's)."),
    log_format: str = typer.Option(
        "json",
        "--log-format",
        envvar=FORMAT_ENV,
        help="json: one JSON object per line on stderr; text: for reading at a terminal.",
    ),
) -> None:
    """Serve the control plane: the HTTP API (/api/v1, described at /api/v1/openapi.json) over
    this workspace's database, for the CLI (SHIPYARD_URL), CI jobs, bots and the dashboard.

    Every request needs a token. The first admin's comes from the embedded mode, by whoever
    holds the database: `shipyard roles bind alice admin`, then `shipyard token create --user
    alice`. Several replicas can serve one PostgreSQL database. It logs JSON lines on stderr
    (--log-format), and to an OpenTelemetry collector when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    """
    import os

    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    from shipyard.api.server import LEVEL_ENV, SUPERVISOR_ENV, has_admin
    from shipyard.observability.logs import configure
    from shipyard.observability.otlp import otlp_handler

    configure(log_format, log_level)
    otlp_handler()
    ws = open_workspace(create=False)
    settings = ws.settings.server
    host = host or settings.host
    port = settings.port if port is None else port
    if not has_admin(ws.store):
        err_console.print(
            "no identity holds the admin role yet: create the first admin's token here with\n"
            "  shipyard roles bind YOU admin && shipyard token create --user YOU"
        )
    from shipyard.supervision import bind_tcp

    try:  # before anything is said or started: a port in use is one line, at once
        sock = bind_tcp(host, port)
    except OSError as exc:
        raise InvalidInput(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another with --port"
        ) from None
    port = sock.getsockname()[1]  # --port 0: the one the system picked
    if workers > 1:
        os.environ[SUPERVISOR_ENV] = str(os.getpid())  # each worker ends with this process
        os.environ[FORMAT_ENV], os.environ[LEVEL_ENV] = log_format, log_level  # logs as it does
    else:
        os.environ.pop(SUPERVISOR_ENV, None)
    base = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    console.print(
        f"shipyard control plane on {base}/api/v1 ({ws.store.dialect}); the dashboard at {base}/ui/"
    )
    config = uvicorn.Config(
        "shipyard.api.server:create_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        log_config=None,  # Uvicorn's lines go through the handler configure() installed
        access_log=False,
        server_header=False,
    )
    if workers == 1:
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
        if not server.started:
            raise SystemExit(STARTUP_FAILURE)
        return
    from uvicorn.supervisors import Multiprocess

    Multiprocess(config, sockets=[sock]).run()


def register(app: typer.Typer) -> None:
    app.command("server")(server)
