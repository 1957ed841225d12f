"""``shipyard quota …`` and ``shipyard hardware advise``: pools, status, plans and estimates.

Every command goes through the control plane's operations (``quota.*``, :func:`client`), so it
reads and prints the same on the database and through a server. ``hardware advise`` measures
the machine it runs on (that is its point) and asks the operations only for a step's history.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from shipyard.cli.output import console, duration, flag, print_json, when
from shipyard.errors import ConfigError, InvalidInput, NotFound

if TYPE_CHECKING:
    from shipyard.api.client import Client

quota_app = typer.Typer(help="Quota pools, leases, plans and estimates.", no_args_is_help=True)
hardware_app = typer.Typer(help="Hardware advice from measurements and a cited model.")

BAR_WIDTH = 24


@contextmanager
def _client() -> Iterator[Client]:
    """The command's client; in the embedded mode its database connections are closed when
    the command is done (a long-lived process running commands must not collect them)."""
    from shipyard.cli.connect import client

    api = client()
    try:
        yield api
    finally:
        ws = getattr(api, "ws", None)
        if ws is not None:
            ws.store.dispose()


def _call(name: str, **params: Any) -> Any:
    """One operation, in a client of its own."""
    with _client() as api:
        return api.call(name, **params)


def _amount(resource: str, value: float) -> str:
    from shipyard.quantities import format_amount

    return format_amount(resource, value)


def _amounts(values: dict[str, float]) -> str:
    return ", ".join(f"{r}={_amount(r, v)}" for r, v in sorted(values.items()))


def _bar(used: float, capacity: float) -> str:
    filled = 0 if capacity <= 0 else min(BAR_WIDTH, round(BAR_WIDTH * used / capacity))
    return "█" * filled + "·" * (BAR_WIDTH - filled)


@quota_app.command("apply")
def apply(file: Path = typer.Argument(..., help="A pools YAML file.")) -> None:
    """Create or replace the pools a YAML file declares (validated; nothing changes on error)."""
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file} is not UTF-8 text") from None
    done = _call("quota.apply", text=text, source=str(file))
    for pool in done["applied"]:
        console.print(
            f"[green]✓[/] pool [bold]{pool['name']}[/] ({pool['mode']}): "
            + ", ".join(f"{r}={_amount(r, v)}" for r, v in sorted(pool["capacity"].items()))
        )


@quota_app.command("pools")
def pools(as_json: bool = flag("--json", help="Print JSON.")) -> None:
    """List the pools with their members' shares and caps."""
    from shipyard.api.client import every

    with _client() as api:
        found = list(every(api, "quota.pool.list"))
    if as_json:
        print_json(found)
        return
    if not found:
        console.print("no pools yet: declare them with `shipyard quota apply pools.yaml`")
    for p in found:
        console.print(f"[bold]{p['name']}[/] ({p['mode']})")
        for r, v in sorted(p["capacity"].items()):
            console.print(f"  {r:<10} {_amount(r, v)}")
        for pipeline, m in p["members"].items():
            console.print(
                f"  member {pipeline}: share {_amounts(m['share'])}; cap {_amounts(m['cap'])}; "
                f"weight {m['weight']:g}"
            )


@quota_app.command("status")
def status(as_json: bool = flag("--json", help="Print JSON.")) -> None:
    """Each pool with a bar per resource, who holds what, who waits (the forecast of
    exhaustion is the daemon's last sample)."""
    from shipyard.api.client import every

    with _client() as api:
        now = api.call("quota.status")
        if as_json:
            print_json(
                {
                    "pools": {p["name"]: p["resources"] for p in now["pools"]},
                    "leases": list(every(api, "quota.lease.list", status="active")),
                }
            )
            return
    if not now["pools"]:
        console.print("no pools yet: declare them with `shipyard quota apply pools.yaml`")
    for pool in now["pools"]:
        console.print(f"[bold]{pool['name']}[/] ({pool['mode']})")
        for r, o in pool["resources"].items():
            seconds = o["time_to_exhaustion_s"]
            tte = f"  exhausted in ~{duration(seconds)}" if seconds is not None else ""
            console.print(
                f"  {r:<10} {_bar(o['reserved'], o['capacity'])} {_amount(r, o['reserved'])} of "
                f"{_amount(r, o['capacity'])}{tte}"
            )
        for h in pool["holders"]:
            verb = "holds" if h["status"] == "held" else "waits for"
            count = f"{h['leases']} lease" + ("s" if h["leases"] != 1 else "")
            console.print(
                f"    {h['pipeline']} {verb} {_amounts(h['resources'])} "
                f"({count}, since {when(h['since'])})"
            )


@quota_app.command("leases")
def leases(
    pool: str | None = typer.Option(None, "--pool", help="Only leases in this pool."),
    pipeline: str | None = typer.Option(None, "--pipeline", help="Only this pipeline's."),
    state: str = typer.Option(
        "active", "--status", help="active (held or waiting), any, or one status."
    ),
    limit: int = typer.Option(50, "--limit", min=1, max=1000, help="How many, oldest first."),
    cursor: str | None = typer.Option(None, "--after", help="Page: the `next` printed before."),
    as_json: bool = flag("--json", help="Print JSON."),
) -> None:
    """Leases, oldest request first: their pool, holder, resources and state."""
    from shipyard.cli.output import table

    found = _call(
        "quota.lease.list",
        pool=pool,
        pipeline=pipeline,
        status=state,
        limit=limit,
        cursor=cursor,
    )
    if as_json:
        print_json(found)
        return
    if not found["items"]:
        console.print("no leases match")
        return
    listing = table("id", "pool", "pipeline", "step", "status", "resources", "since")
    for x in found["items"]:
        listing.add_row(
            x["id"],
            x["pool"],
            x["pipeline"],
            x["step"] or "-",
            x["status"],
            _amounts(x["resources"]),
            when(x["since"]),
        )
    console.print(listing)
    if found["next"] is not None:
        console.print(f"more: shipyard quota leases --after {found['next']}")


@quota_app.command("reclaim")
def reclaim() -> None:
    """Expire leases whose holders stopped heartbeating (the daemon does this every tick)."""
    gone = _call("quota.reclaim")["reclaimed"]
    listed = f": {', '.join(gone)}" if gone else ""
    console.print(f"reclaimed {len(gone)} expired lease(s){listed}")


@quota_app.command("estimate")
def estimate(
    pipeline: str = typer.Argument(..., help="The pipeline to estimate."),
    input_rows: int | None = typer.Option(None, "--input-rows", help="Scale to this input size."),
    like: str | None = typer.Option(None, "--like", help="Use a similar pipeline's history."),
    margin: float = typer.Option(0.2, "--margin", min=0, help="Safety margin on the p90."),
    as_json: bool = flag("--json", help="Print JSON."),
) -> None:
    """Per-step p90 memory and CPU from run history, scaled to the input, and the peak."""
    if input_rows is not None and input_rows <= 0:
        raise InvalidInput("--input-rows must be a positive number of rows")
    est = _call(
        "quota.estimate", pipeline=pipeline, input_rows=input_rows, like=like, margin=margin
    )
    if as_json:
        print_json(est)
        return
    steps = est["steps"]
    scaled = sum(e["memory_model"] is not None for e in steps)
    if not input_rows:
        size = ""
    elif scaled == len(steps):
        size = f", scaled to {input_rows:,} rows"
    elif scaled == 0:
        size = f"; not scaled to {input_rows:,} rows: no step has runs of 3 distinct input sizes"
    else:
        size = f"; {scaled} of {len(steps)} steps scaled to {input_rows:,} rows"
    runs = est["runs"]
    console.print(
        f"[bold]{pipeline}[/]: based on {runs} succeeded run{'s' if runs != 1 else ''} "
        f"of [bold]{est['based_on']}[/], p90 + {margin:.0%} margin{size}"
    )
    for e in steps:
        model = ""
        if (law := e["memory_model"]) is not None:
            model = (
                f"  memory ∝ rows^{law['exponent']:.2f} "
                f"(log-log least squares, MAPE {law['mape']:.1%} on {law['points']} runs)"
            )
        console.print(
            f"  {e['step']:<20} memory {_amount('memory', e['memory_bytes']):>9}  "
            f"cpu {e['cpu']:g}  {e['cpu_seconds']:.1f} cpu-s  {duration(e['duration_s'])}{model}"
        )
    peak = est["peak"]
    console.print(
        f"  peak along the DAG: cpu {peak['cpu']:g}, memory "
        f"{_amount('memory', peak['memory'])}; run time p90 {duration(est['duration_s'])}"
    )
    for note in est["notes"]:
        console.print(f"  [yellow]note:[/] {note}")


@quota_app.command("serving")
def serving(
    model: str = typer.Argument(
        ...,
        help="A model, or MODEL@ALIAS (default: its default alias, else its newest version).",
    ),
    qps: float = typer.Option(..., "--qps", help="Predicted peak queries per second."),
    p99_ms: float | None = typer.Option(None, "--p99-ms", help="Latency target, ms."),
    latency_ms: float | None = typer.Option(
        None, "--latency-ms", help="Use this latency instead of measuring the model."
    ),
    concurrency: int = typer.Option(
        1, "--concurrency", min=1, help="Requests one replica serves at once."
    ),
    utilisation: float = typer.Option(
        0.7, "--utilisation", min=0.01, max=1.0, help="Target busy share of each replica."
    ),
    cpu: float = typer.Option(1.0, "--cpu-per-replica", help="CPUs of one replica."),
    memory: str = typer.Option("1Gi", "--memory-per-replica", help="Memory of one replica."),
    reserve: str | None = typer.Option(None, "--reserve", help="Record it in this pool."),
    seconds: float = typer.Option(2.0, "--seconds", help="Load-test length (on the server)."),
) -> None:
    """Replicas by Little's law from a measured latency, N+1 and experiment headroom."""
    sized = _call(
        "quota.serving",
        model=model,
        qps=qps,
        p99_ms=p99_ms,
        latency_ms=latency_ms,
        concurrency=concurrency,
        utilisation=utilisation,
        cpu_per_replica=cpu,
        memory_per_replica=memory,
        reserve=reserve,
        seconds=seconds,
    )
    latency_s = sized["latency_s"]
    console.print(f"[bold]{model}[/] at {qps:g} QPS: {sized['basis']}")
    console.print(
        f"  in flight L = λW = {qps:g} × {latency_s * 1000:.2f} ms = {sized['in_flight']:.2f}; "
        f"÷ ({concurrency} × {utilisation:.0%}) → {sized['base_replicas']}; N+1 → "
        f"{sized['base_replicas'] + 1}; headroom +{sized['headroom_replicas']} → "
        f"[bold]{sized['replicas']} replicas[/]"
    )
    console.print("  asks for " + _amounts(sized["resources"]))
    if sized["over_p99_target"]:
        console.print(
            f"  [red]one request takes {latency_s * 1000:.1f} ms, over the "
            f"{p99_ms:g} ms p99 target: more replicas will not fix that[/]"
        )
    if sized["reserved_in"]:
        console.print(
            f"  [green]✓[/] reserved in pool {sized['reserved_in']} (counted by `quota plan`)"
        )


@quota_app.command("plan")
def plan(as_json: bool = flag("--json", help="Print JSON.")) -> None:
    """Is there enough quota to run all scheduled pipelines over the coming week?

    Counts, per pool and resource: the serving reservations (`quota serving --reserve`: the
    servers each model's QPS estimate needs); the live serving leases (`serve --pool`) beyond
    them, and any other lease held by no run, all week; the leases of runs in progress until
    their expected end; and every firing of every scheduled pipeline at its estimated demand
    (from history), then experiment headroom on top. Exits 1 when a pool falls short."""
    result = _call("quota.plan")
    if as_json:
        print_json(result)
        return
    for x in result["lines"]:
        r = x["resource"]
        mark = (
            "[green]fits[/]"
            if x["fits"]
            else f"[red]short by {_amount(r, x['total'] - x['capacity'])}[/]"
        )
        console.print(f"[bold]{x['pool']}[/] {r}: capacity {_amount(r, x['capacity'])} — {mark}")
        console.print(f"  serving reservations  {_amount(r, x['reserved'])}")
        holders = x["holders"]
        console.print(
            f"  live serving leases   {_amount(r, x['serving'])}"
            + (f": {escape(', '.join(holders))}" if holders else "")
        )
        colliding = x["colliding"]
        at = f" at {when(x['peak_at'])}: {', '.join(colliding)}" if colliding else ""
        console.print(f"  running now           {_amount(r, x['running'])}")
        console.print(f"  scheduled peak        {_amount(r, x['scheduled_peak'])}{at}")
        console.print(f"  experiment headroom   {_amount(r, x['headroom'])}")
    for note in result["notes"]:
        console.print(f"[yellow]note:[/] {note}")
    if not result["lines"]:
        console.print("no pools declared: `shipyard quota apply pools.yaml` first")
        raise typer.Exit(1)
    verdict = "enough quota for every pipeline" if result["fits"] else "NOT enough quota"
    console.print(f"verdict: [bold]{verdict}[/]")
    if not result["fits"]:
        raise typer.Exit(1)


@hardware_app.command("advise")
def hardware_advise(
    target: str | None = typer.Argument(None, help="FILE:STEP whose run history to use."),
    flops: float | None = typer.Option(None, "--flops", help="FLOPs per run."),
    bytes_moved: float = typer.Option(0.0, "--bytes", help="Bytes moved per run."),
    parameters: float = typer.Option(0.0, "--params", help="Model parameters."),
    inference: bool = flag("--inference", help="Size for inference, not training."),
    price: float | None = typer.Option(None, "--local-price", help="This machine, USD/hour."),
) -> None:
    """Cheaper or faster hardware for a step: measured here, roofline-modelled elsewhere."""
    import psutil

    from shipyard.quota.hardware import Workload, advise, by_cost, load_catalogue, measure_cpu

    if flops is None and (not target or ":" not in target):
        raise InvalidInput("give FILE:STEP (with run history) or --flops")
    measured = measure_cpu()
    basis = "FLOPs given with --flops"
    if flops is None:
        assert target is not None
        file, step = target.rsplit(":", 1)
        cpu_s = sorted(_call("quota.step_cpu", file=file, step=step)["cpu_seconds"])
        if not cpu_s:
            raise NotFound("run history of step", target, "run it once, or give --flops")
        one_thread = next(m.gflops for m in measured if m.threads == 1 and m.dtype == "float64")
        p90 = cpu_s[min(len(cpu_s) - 1, math.ceil(0.9 * len(cpu_s)) - 1)]
        flops = p90 * one_thread * 1e9
        basis = (
            f"modelled: p90 {p90:.1f} CPU-s over {len(cpu_s)} runs × {one_thread:.1f} "
            "GFLOP/s (1 thread, measured) — assumes the step is matmul-bound"
        )
    work = Workload(flops, bytes_moved, parameters, training=not inference, basis=basis)
    options = advise(
        work,
        measured,
        load_catalogue(),
        local_memory=float(psutil.virtual_memory().total),
        local_price_per_hour=price,
    )
    console.print(f"workload: {flops:.3g} FLOPs, {bytes_moved:.3g} bytes; {basis}")
    if parameters:
        console.print(
            f"model size asks for {_amount('memory', work.memory_needed)} "
            f"({'inference, 2' if inference else 'training with Adam, 16'} B/param)"
        )
    console.print("[bold]by time[/]")
    for o in options:
        cost = f"${o.cost_per_run:.3g}/run" if o.cost_per_run is not None else "no price"
        fit = "" if o.fits_memory else " [red](model does not fit)[/]"
        console.print(
            f"  {o.name:<28} {_seconds(o.seconds):>9}  {cost:<14} "
            f"{escape(f'[{o.provenance}]')} {escape(o.detail)}{fit}"
        )
    console.print("[bold]by cost per run[/]")
    for o in by_cost(options)[:5]:
        fit = "" if o.fits_memory else " (model does not fit)"
        console.print(f"  {o.name:<28} ${o.cost_per_run:.3g}  {escape(f'[{o.provenance}]')}{fit}")


def _seconds(value: float) -> str:
    return f"{value:.3g}s" if value < 60 else duration(value)


def register(app: typer.Typer) -> None:
    app.add_typer(quota_app, name="quota")
    app.add_typer(hardware_app, name="hardware")
