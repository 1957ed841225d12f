"""``shipyard daemon [--once]``: the control loop, with ``/metrics`` on a port."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from shipyard.alerting.config import load_config
from shipyard.alerting.exposition import MetricsServer
from shipyard.cli.output import console, flag, open_workspace
from shipyard.daemon import Daemon, DaemonContext, run_until_signalled, subprocess_launcher
from shipyard.errors import ConfigError, InvalidInput
from shipyard.observability.logs import FORMAT_ENV, configure
from shipyard.observability.otlp import otlp_handler


def daemon(
    once: bool = flag("--once", help="Run every task once, then exit."),
    metrics_port: int = typer.Option(
        -1, "--metrics-port", help="Serve /metrics on this port (0: any free one; -1: off)."
    ),
    metrics_host: str = typer.Option(
        "127.0.0.1", "--metrics-host", help="Address /metrics listens on."
    ),
    tick: float = typer.Option(0.0, "--tick", help="Seconds between ticks (default: settings)."),
    config: Path | None = typer.Option(None, "--config", help="alerting.yaml to use."),
    log_format: str = typer.Option(
        "json",
        "--log-format",
        envvar=FORMAT_ENV,
        help="json: one JSON object per line on stderr (ts, level, message, task, rollout_id, "
        "model, version, trace_ids …); text: for reading at a terminal.",
    ),
) -> None:
    """Run the control loop: schedules, monitors, alert rules, notifications, rollouts, lease
    reclaim.

    It logs on stderr, JSON lines by default; with OTEL_EXPORTER_OTLP_ENDPOINT set (and the
    otel extra installed) the lines also go to that OpenTelemetry collector. Commands such as
    `shipyard alerts rules` show the configuration it loaded."""
    configure(log_format, logging.INFO)
    otlp_handler()
    ws = open_workspace()
    cfg = load_config(ws.settings.home, config)
    text = None
    if cfg.source != "defaults":
        try:
            text = Path(cfg.source).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read {cfg.source}: {exc}") from None
    context = DaemonContext(
        ws,
        cfg,
        ws.clock,
        subprocess_launcher(ws.settings.logs_dir),
        ws.settings.logs_dir,
        alerting_text=text,
    )
    from shipyard.daemon.tasks import builtin_tasks  # every service: only when the daemon runs

    loop = Daemon(
        context,
        tasks=builtin_tasks(),
        tick_s=tick if tick > 0 else ws.settings.daemon.tick_s,
        leader_ttl_s=ws.settings.daemon.leader_ttl_s,
    )
    if once:
        ran = loop.tick()
        console.print(f"leader: {loop.is_leader}; ran: {', '.join(ran) or 'nothing'}")
        return
    server = None
    if metrics_port >= 0:
        try:
            server = MetricsServer(ws.store, metrics_host, metrics_port).start()
        except OSError as exc:
            raise InvalidInput(f"cannot serve /metrics on {metrics_port}: {exc}") from None
        console.print(f"/metrics on http://{metrics_host}:{server.port}/metrics", soft_wrap=True)
    console.print(f"daemon {loop.holder} started (tick {loop.tick_s:g}s)", soft_wrap=True)
    console.print(f"alerting config: {cfg.source}", soft_wrap=True)
    try:
        run_until_signalled(loop)
    finally:
        if server is not None:
            server.stop()
    console.print("daemon stopped")


def register(app: typer.Typer) -> None:
    app.command()(daemon)
