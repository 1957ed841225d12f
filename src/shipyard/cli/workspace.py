"""``shipyard init``: make the workspace explicit."""

from __future__ import annotations

import typer

from shipyard.cli.output import console, open_workspace


def init() -> None:
    """Create the workspace (SHIPYARD_HOME, default ./.shipyard) and its metadata database."""
    ws = open_workspace()
    console.print(f"[green]✓[/] workspace ready in [bold]{ws.settings.home.resolve()}[/]")
    console.print(f"  metadata:  {ws.store._safe_url}")
    console.print(f"  artifacts: {ws.settings.artifact_url}")


def register(app: typer.Typer) -> None:
    app.command()(init)
