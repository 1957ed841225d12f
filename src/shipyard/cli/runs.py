"""``shipyard run``, ``shipyard runs list|show|logs|cancel`` and ``shipyard pipelines
list|show``.

``run`` runs a pipeline here, in the foreground (always local: its steps are this machine's
processes). The others go through :func:`shipyard.cli.connect.client`: the control plane's
``runs.*`` and ``pipelines.*`` operations, on a server when one is named, else in-process. But
``runs list`` on the workspace's default SQLite file reads it on the driver alone
(:func:`_runs_read_directly`), printing what the operation's answer prints: SQLAlchemy's
import alone would take twice as long as Typer's (issue 12).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from shipyard.api.cursors import decode_cursor, encode_cursor
from shipyard.cli.connect import target
from shipyard.cli.output import (
    FittedTable,
    console,
    duration,
    err_console,
    fail,
    flag,
    human_bytes,
    open_workspace,
    print_json,
    require,
    table,
    when,
)
from shipyard.config.location import DB_FILE, plain_home
from shipyard.statuses import RUN_FINAL, RunStatus, StepStatus
from shipyard.store import run_list

if TYPE_CHECKING:
    from shipyard.workspace import Workspace

STATUS_STYLE: dict[str, str] = {
    StepStatus.PENDING: "dim",
    StepStatus.RUNNING: "cyan",
    StepStatus.RETRYING: "yellow",
    StepStatus.SUCCEEDED: "green",
    StepStatus.FAILED: "bold red",
    StepStatus.CANCELLED: "magenta",
    StepStatus.PREEMPTED: "yellow",
}
"""A run's or a step's status, styled (a run's statuses are a subset of a step's)."""

runs_app = typer.Typer(help="Inspect pipeline runs.", no_args_is_help=True)
pipelines_app = typer.Typer(help="Inspect pipelines.", no_args_is_help=True)


def _styled(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, '')}]{status}[/]"


def _progress_table(title: str, views: dict[str, Any]) -> FittedTable:
    progress = table("step", "state", "attempt", "elapsed", title=title)
    for view in views.values():
        progress.add_row(
            view.name, _styled(view.status), str(view.attempt or "-"), duration(view.elapsed_s)
        )
    return progress


def run_services(ws: Workspace) -> dict[str, Any]:
    """The services a run is wired to, as ``Runner`` keywords: quota's admission in pools and
    its enforcer, and monitoring's judgement of each finished run. The runner chooses none of
    them (pipelines imports no other service); this face does."""
    from shipyard.quota.admission import QuotaAdmission
    from shipyard.quota.enforce import QuotaEnforcer

    return {
        "pools": QuotaAdmission.for_workspace(ws.store, ws.settings, ws.clock),
        "enforcer": QuotaEnforcer(ws.settings.quota.memory_margin),
        "on_finished": [_judge_run],
    }


def _judge_run(ws: Workspace, run_id: str) -> None:
    from shipyard.monitoring.evaluate import on_run_finished

    on_run_finished(ws, run_id)


def run(
    target: str = typer.Argument(..., metavar="FILE[:PIPELINE]", help="Pipeline file and name."),
    param: list[str] = typer.Option([], "--param", "-p", help="A parameter, NAME=VALUE."),
    executor: str = typer.Option("local", "--executor", help="Where steps run: local or ray."),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster to join (ray:// or host:port); default: local Ray."
    ),
    pool: str | None = typer.Option(None, "--pool", help="Quota pool the steps run in."),
    reserve: bool = flag(
        "--reserve", help="Reserve the DAG's peak demand in the pool before starting."
    ),
    priority: int = typer.Option(0, "--priority", help="Admission priority (higher first)."),
    as_json: bool = flag("--json", help="Print the finished run as JSON."),
) -> None:
    """Run a pipeline, showing each step's state live; exit 1 if it fails, 130 if cancelled."""
    from rich.live import Live

    from shipyard.pipelines.loader import load_pipeline
    from shipyard.pipelines.params import parse_params
    from shipyard.pipelines.records import get_run
    from shipyard.pipelines.reservation import resolve_pool
    from shipyard.pipelines.runner import Runner

    if executor not in ("local", "ray"):
        fail(f"unknown executor {executor!r}; available: local, ray")
    if address is not None and executor != "ray":
        fail("--address is for --executor ray")
    file, pipeline = load_pipeline(target)
    params = parse_params(pipeline.build_fn, param)
    pipeline.build(params)  # a malformed DAG fails here, before anything is recorded
    ws = open_workspace()
    require(ws, "pool", pool)
    title = f"{pipeline.name} ({pipeline.kind.value})"
    services = run_services(ws)
    choice = resolve_pool(ws, pipeline, pool, services["pools"])
    if choice.name is not None or choice.recorded is not None:
        err_console.print(choice.describe(), markup=False, highlight=False, soft_wrap=True)
    options: dict[str, Any] = {"pool": pool, "reserve": reserve, "priority": priority}
    options.update(services)
    if executor == "ray":
        from shipyard.pipelines.ray_executor import RayExecutor

        options["executor"] = RayExecutor(address=address)
    if as_json:
        with Runner(ws, **options) as runner:
            result = runner.run(file, pipeline, params)
    else:
        with Live(console=console, refresh_per_second=8, transient=False) as live:

            def show(views: dict[str, Any]) -> None:
                live.update(_progress_table(title, views))

            with Runner(ws, on_change=show, **options) as runner:
                result = runner.run(file, pipeline, params)
        if not console.is_terminal:
            console.print()
    if as_json:
        print_json(get_run(ws.store, result.run_id))
    else:
        line = f"run [bold]{result.run_id}[/] {_styled(result.status)}"
        console.print(line + (f": {result.exit_reason}" if result.exit_reason else ""))
    if result.status == RunStatus.CANCELLED:
        raise typer.Exit(130)
    if result.status != RunStatus.SUCCEEDED:
        raise typer.Exit(1)


@runs_app.command("list")
def runs_list(
    pipeline: str | None = typer.Option(None, "--pipeline", help="Only this pipeline's runs."),
    status: str | None = typer.Option(
        None, "--status", help="Only runs in this status: running, succeeded, failed, cancelled."
    ),
    kind: str | None = typer.Option(
        None, "--kind", help="Only runs of this kind: data, training, validation, serving."
    ),
    since: str | None = typer.Option(None, "--since", help="Only since then: 2h, 7d, 2026-11-29."),
    limit: int = typer.Option(20, "--limit", min=1, max=1000, help="How many, newest first."),
    cursor: str | None = typer.Option(None, "--cursor", help="Page: the cursor printed below."),
    as_json: bool = flag("--json", help="Print JSON."),
) -> None:
    """List runs, newest first."""
    from shipyard.cli.connect import client

    if since is not None:
        from shipyard.cli.audit import parse_since

        since_s: float | None = parse_since(since, time.time())
    else:
        since_s = None
    query = {
        "pipeline": pipeline,
        "status": status,
        "kind": kind,
        "since": since_s,
        "limit": limit,
        "cursor": cursor,
    }
    found = _runs_read_directly(query) or client().call("runs.list", **query)
    _print_listing(
        found["items"],
        as_json,
        ("run", "pipeline", "kind", "status", "started", "duration", "reason"),
        lambda r: (
            r["id"],
            r["pipeline"],
            r["kind"],
            _styled(r["status"]),
            when(r["started_at"]),
            duration(r["duration_s"]),
            r["exit_reason"] or "",
        ),
        empty="no runs yet: start one with `shipyard run FILE`"
        if cursor is None and not any((pipeline, status, kind, since))
        else "no runs match",
    )
    if found["next"] is not None and not as_json:
        console.print(
            f"older: shipyard runs list --cursor {found['next']}", highlight=False, soft_wrap=True
        )


def _runs_read_directly(query: dict[str, Any]) -> dict[str, Any] | None:
    """``runs.list``'s answer to ``query``, read on the workspace's SQLite file by the driver
    alone (:mod:`shipyard.store.run_list`: no SQLAlchemy, no Pydantic unless a filter needs
    checking), when no server is named, the settings are the defaults but for the home
    (:func:`~shipyard.config.location.plain_home`) and the database is one that path reads.
    ``None`` otherwise: then the operation answers, and says what is wrong, if anything is.

    A filter or a cursor is checked by the operation's own query model, so a bad one reads as
    the operation's error; ``--limit``'s bounds are the model's
    (``tests/pipelines/test_cli_runs_list.py`` checks), so a page with no filter needs no
    check."""
    home = plain_home()
    if home is None or not home.is_dir() or target() is not None:
        return None
    conn = run_list.connect(home / DB_FILE)
    if conn is None:
        return None
    try:
        if any(value is not None for key, value in query.items() if key != "limit"):
            from shipyard.api.operations import resolve

            checked = resolve("runs.list").bind(query)["query"]
            query = {key: getattr(checked, key) for key in query}
        found = run_list.runs_page(
            conn,
            pipeline=query["pipeline"],
            status=query["status"],
            kind=query["kind"],
            since=query["since"],
            after=decode_cursor("runs.list", query["cursor"], float, str),
            limit=query["limit"],
        )
    finally:
        conn.close()
    if found is None:
        return None
    following = encode_cursor("runs.list", *found.next_key) if found.next_key else None
    return {"items": found.items, "next": following}


@runs_app.command("show")
def runs_show(
    run_id: str = typer.Argument(..., metavar="RUN", help="Run id (or a unique prefix)."),
    as_json: bool = flag("--json", help="Print JSON."),
) -> None:
    """Show a run: its steps, their usage, exit reasons and artifacts."""
    from shipyard.cli.connect import client

    info = client().call("runs.show", run_id=run_id)
    if as_json:
        print_json(info)
        return
    console.print(
        f"run [bold]{info['id']}[/]  {info['pipeline']} ({info['kind']})  "
        f"{_styled(info['status'])}  {duration(info['duration_s'])}"
    )
    console.print(f"params: {json.dumps(info['params'])}")
    if info["exit_reason"]:
        console.print(f"reason: {info['exit_reason']}")
    steps = table(
        "step", "status", "try", "duration", "peak RSS", "CPU s", "input", "reason", free={"reason"}
    )
    for st in info["steps"]:
        cpu = st["cpu_seconds"]
        rows = st["input_rows"]
        steps.add_row(
            st["step"],
            _styled(st["status"]),
            str(st["attempt"]),
            duration(st["duration_s"]),
            _against(human_bytes(st["peak_rss_bytes"]), st["usage"]["memory"]),
            f"{cpu:.2f}" if cpu is not None else "-",
            f"{rows} rows, {human_bytes(st['input_bytes'])}" if rows else "-",
            st["exit_reason"] or "",
        )
    console.print(steps)


def _against(used: str, usage: dict[str, float | None]) -> str:
    """``812 MiB (40%)``: what a step used and its share of what it declared."""
    ratio = usage.get("ratio")
    return f"{used} ({ratio:.0%})" if ratio is not None else used


@runs_app.command("cancel")
def runs_cancel(
    run_id: str = typer.Argument(..., metavar="RUN", help="Run id (or a unique prefix)."),
    wait_s: float = typer.Option(
        15.0,
        "--wait",
        min=0,
        max=60,
        help="Seconds the run's runner gets to stop its steps itself.",
    ),
) -> None:
    """Cancel a running run: stop its steps, release its leases, mark it cancelled."""
    from shipyard.cli.connect import client

    ended = client().call("runs.cancel", run_id=run_id, wait_s=wait_s)
    steps = ", ".join(ended["steps_stopped"]) or "none running"
    leases = len(ended["leases_released"])
    console.print(
        f"✓ run {ended['run_id']} ({ended['pipeline']}) cancelled; steps stopped: {steps}; "
        f"leases released: {leases}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _render(line: dict[str, Any], prefix: str) -> str:
    if line.get("stream") == "output":
        return f"{prefix}{line['message']}"
    extra = {
        k: v
        for k, v in line.items()
        if k not in ("ts", "level", "run_id", "pipeline", "step", "message")
    }
    tail = " " + " ".join(f"{k}={v}" for k, v in extra.items()) if extra else ""
    return (
        f"{prefix}{when(line.get('ts'))} {line.get('level', '').upper():7} {line['message']}{tail}"
    )


LOG_POLL_S = 0.2


@runs_app.command("logs")
def runs_logs(
    run_id: str = typer.Argument(..., metavar="RUN", help="Run id (or a unique prefix)."),
    step_name: str | None = typer.Option(None, "--step", help="Only this step's log."),
    follow_: bool = flag("--follow", "-f", help="Keep printing until the run ends."),
    as_json: bool = flag("--json", help="One JSON object per line."),
) -> None:
    """Print a run's step logs (stdout, stderr and structured lines)."""
    from shipyard.cli.connect import client

    api = client()
    info = api.call("runs.show", run_id=run_id)
    steps = [st["step"] for st in info["steps"] if st["log_path"]]
    if step_name is not None:
        # the server names the steps when this one is not among them
        steps = [step_name]
    offsets = dict.fromkeys(steps, 0)
    while True:
        got = False
        finished: bool | None = None
        for step in steps:
            more = True
            while more:
                found = api.call("runs.logs", run_id=info["id"], step=step, offset=offsets[step])
                if finished is None:  # read before any log of this round
                    finished = not follow_ or found["run_status"] in RUN_FINAL
                offsets[step] = found["offset"]
                more = found["next"] is not None and bool(found["items"])
                for line in found["items"]:
                    got = True
                    if as_json:
                        print(json.dumps({"step": step, **line}, default=str), flush=True)
                    else:
                        prefix = f"[{step}] " if len(steps) > 1 else ""
                        console.print(_render(line, prefix), markup=False, soft_wrap=True)
        if finished is not False and not got:
            return
        if not got:
            time.sleep(LOG_POLL_S)


@pipelines_app.command("list")
def pipelines_list(
    limit: int = typer.Option(1000, "--limit", min=1, max=1000, help="How many, by name."),
    cursor: str | None = typer.Option(None, "--cursor", help="Page: the cursor printed below."),
    as_json: bool = flag("--json", help="Print JSON."),
) -> None:
    """List the pipelines that have run here, with their latest run."""
    from shipyard.cli.connect import client

    found = client().call("pipelines.list", limit=limit, cursor=cursor)
    _print_listing(
        found["items"],
        as_json,
        ("pipeline", "kind", "steps", "schedule", "last run", "status", "file"),
        lambda p: (
            p["name"],
            p["kind"],
            str(p["steps"]),
            p["schedule"] or "-",
            p["last_run"] or "-",
            _styled(p["last_status"]) if p["last_status"] else "-",
            p["file"],
        ),
        empty="no pipelines yet: a pipeline appears here after its first `shipyard run`",
    )
    if found["next"] is not None and not as_json:
        console.print(
            f"more: shipyard pipelines list --cursor {found['next']}",
            highlight=False,
            soft_wrap=True,
        )


@pipelines_app.command("show")
def pipelines_show(
    pipeline: str = typer.Argument(..., metavar="PIPELINE", help="The pipeline's name."),
    as_json: bool = flag("--json", help="Print JSON."),
) -> None:
    """Show a pipeline: its steps and what they declare, and its latest runs."""
    from shipyard.cli.connect import client

    info = client().call("pipelines.show", name=pipeline)
    if as_json:
        print_json(info)
        return
    counts = ", ".join(f"{n} {s}" for s, n in sorted(info["runs_by_status"].items())) or "none"
    console.print(
        f"pipeline [bold]{escape(info['name'])}[/] ({info['kind']})  "
        f"schedule: {info['schedule'] or '-'}  runs: {counts}"
    )
    console.print(f"file: {info['file']}", markup=False, highlight=False, soft_wrap=True)
    steps = table("step", "after", "cpu", "memory", "gpu", "retries", "timeout")
    for name_, spec in info["step_specs"].items():
        res = spec.get("resources", {})
        steps.add_row(
            name_,
            ", ".join(spec.get("upstream", [])) or "-",
            f"{res.get('cpu', 0):g}",
            human_bytes(res.get("memory")),
            f"{res.get('gpu', 0):g}",
            str(spec.get("retries", 0)),
            duration(spec.get("timeout_s")),
        )
    console.print(steps)
    _print_listing(
        info["recent_runs"],
        False,
        ("run", "status", "started", "duration", "by", "reason"),
        lambda r: (
            r["id"],
            _styled(r["status"]),
            when(r["started_at"]),
            duration(r["duration_s"]),
            r["created_by"] or "-",
            r["exit_reason"] or "",
        ),
        empty="no runs yet",
    )


def _print_listing(
    rows: list[dict[str, Any]],
    as_json: bool,
    columns: tuple[str, ...],
    cells: Callable[[dict[str, Any]], tuple[str, ...]],
    empty: str,
) -> None:
    """A listing as JSON (always a list, even empty) or as a table (or one line when empty)."""
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print(empty)
        return
    listing = table(*columns, free={"reason", "file"})
    for row in rows:
        listing.add_row(*cells(row))
    console.print(listing)


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.add_typer(runs_app, name="runs")
    app.add_typer(pipelines_app, name="pipelines")
