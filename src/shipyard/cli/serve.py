"""``shipyard serve``: the model server."""

from __future__ import annotations

import typer

from shipyard.cli.output import console, open_workspace


def serve(
    host: str = typer.Option(None, "--host", help="Address to listen on (default: settings)."),
    port: int = typer.Option(
        None, "--port", min=0, max=65535, help="Port (default: settings, 8000)."
    ),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="Worker processes."),
    model: str = typer.Option(None, "--model", help="The model /invocations answers for."),
    no_monitoring: bool = typer.Option(
        False, "--no-monitoring", help="Serve without windows, profiles or request logs."
    ),
    log_level: str = typer.Option("warning", "--log-level", help="Uvicorn's log level."),
) -> None:
    """Serve every model whose default alias points at a version (OIP V2 and MLflow scoring).

    Alias moves are picked up within a second, without a restart.
    """
    from shipyard.serving.server import run

    settings = open_workspace().settings
    host = host or settings.serving.host
    port = settings.serving.port if port is None else port
    console.print(f"serving on http://{host}:{port} with {workers} worker(s)")
    run(host, port, workers, default_model=model, monitoring=not no_monitoring, log_level=log_level)


def register(app: typer.Typer) -> None:
    app.command()(serve)
