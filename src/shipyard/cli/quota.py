"""``shipyard quota …`` and ``shipyard hardware advise``: pools, status, plans and estimates."""

from __future__ import annotations

import math
import os
from collections import defaultdict
from importlib import import_module
from pathlib import Path
from typing import Any

import psutil
import typer
from rich.markup import escape
from sqlalchemy import select

from shipyard.cli.output import console, duration, flag, open_workspace, print_json, require, when
from shipyard.errors import InvalidInput, NotFound
from shipyard.quota.admission import reclaim_expired
from shipyard.quota.estimate import estimate_pipeline, measure_latency, serving_replicas
from shipyard.quota.hardware import Workload, advise, by_cost, load_catalogue, measure_cpu
from shipyard.quota.plan import plan_from_store
from shipyard.quota.pools import apply_pools, list_pools, read_pool_file
from shipyard.quota.resources import format_amount, parse_amounts
from shipyard.quota.usage import record_usage
from shipyard.statuses import LEASE_ACTIVE, LeaseStatus, StepStatus
from shipyard.store.quota import QuotaLease, QuotaPool, QuotaReservation
from shipyard.store.tables import StepRun

quota_app = typer.Typer(help="Quota pools, leases, plans and estimates.", no_args_is_help=True)
hardware_app = typer.Typer(help="Hardware advice from measurements and a cited model.")

BAR_WIDTH = 24


def _bar(used: float, capacity: float) -> str:
    filled = 0 if capacity <= 0 else min(BAR_WIDTH, round(BAR_WIDTH * used / capacity))
    return "█" * filled + "·" * (BAR_WIDTH - filled)


@quota_app.command("apply")
def apply(file: Path = typer.Argument(..., help="A pools YAML file.")) -> None:
    """Create or replace the pools a YAML file declares (validated; nothing changes on error)."""
    ws = open_workspace()
    pools = read_pool_file(file, ws.settings.quota.default_cap_fraction)
    apply_pools(ws.store, pools, ws.clock, actor=ws.actor)
    for pool in pools:
        console.print(
            f"[green]✓[/] pool [bold]{pool.name}[/] ({pool.mode}): "
            + ", ".join(f"{r}={format_amount(r, v)}" for r, v in sorted(pool.capacity.items()))
        )


@quota_app.command("pools")
def pools(as_json: bool = flag("--json", help="Print JSON.")) -> None:
    """List the pools with their members' shares and caps."""
    ws = open_workspace(create=False)
    found = list_pools(ws.store)
    if as_json:
        print_json(
            [
                {
                    "name": p.name,
                    "mode": p.mode,
                    "capacity": p.capacity,
                    "members": {
                        m.pipeline: {"share": m.share, "cap": m.cap, "weight": m.weight}
                        for m in p.members.values()
                    },
                }
                for p in found
            ]
        )
        return
    if not found:
        console.print("no pools yet: declare them with `shipyard quota apply pools.yaml`")
    for p in found:
        console.print(f"[bold]{p.name}[/] ({p.mode})")
        for r, v in sorted(p.capacity.items()):
            console.print(f"  {r:<10} {format_amount(r, v)}")
        for m in p.members.values():
            share = ", ".join(f"{r}={format_amount(r, v)}" for r, v in sorted(m.share.items()))
            cap = ", ".join(f"{r}={format_amount(r, v)}" for r, v in sorted(m.cap.items()))
            console.print(f"  member {m.pipeline}: share {share}; cap {cap}; weight {m.weight:g}")


@quota_app.command("status")
def status(as_json: bool = flag("--json", help="Print JSON.")) -> None:
    """Each pool with a bar per resource, who holds what, who waits (and records usage)."""
    ws = open_workspace(create=False)
    outlook = {(o.pool, o.resource): o for o in record_usage(ws.store, ws.clock)}
    with ws.store.session() as s:
        leases = list(
            s.scalars(
                select(QuotaLease)
                .where(QuotaLease.status.in_(LEASE_ACTIVE))
                .order_by(QuotaLease.requested_at)
            )
        )
        names = list(s.scalars(select(QuotaPool.name).order_by(QuotaPool.name)))
    found = {p.name: p for p in list_pools(ws.store)}
    if as_json:
        print_json(
            {
                "pools": {
                    n: {
                        r: {
                            "capacity": o.capacity,
                            "reserved": o.reserved,
                            "time_to_exhaustion_s": o.seconds,
                        }
                        for (pn, r), o in outlook.items()
                        if pn == n
                    }
                    for n in names
                },
                "leases": [
                    {
                        "id": x.id,
                        "pool": x.pool,
                        "pipeline": x.pipeline,
                        "step": x.step,
                        "status": x.status,
                        "resources": x.resources,
                        "since": x.requested_at,
                    }
                    for x in leases
                ],
            }
        )
        return
    if not names:
        console.print("no pools yet: declare them with `shipyard quota apply pools.yaml`")
    for name in names:
        pool = found[name]
        console.print(f"[bold]{name}[/] ({pool.mode})")
        for r, cap in sorted(pool.capacity.items()):
            o = outlook[(name, r)]
            tte = f"  exhausted in ~{duration(o.seconds)}" if o.seconds is not None else ""
            console.print(
                f"  {r:<10} {_bar(o.reserved, cap)} {format_amount(r, o.reserved)} of "
                f"{format_amount(r, cap)}{tte}"
            )
        holders: dict[tuple[str, str], list[QuotaLease]] = defaultdict(list)
        for x in leases:
            if x.pool == name:
                holders[(x.pipeline, x.status)].append(x)
        for (pipeline, state), rows in sorted(holders.items()):
            total: dict[str, float] = {}
            for x in rows:
                for r, v in x.resources.items():
                    total[r] = total.get(r, 0.0) + float(v)
            amounts = ", ".join(f"{r}={format_amount(r, v)}" for r, v in sorted(total.items()))
            since = when(min(x.requested_at for x in rows))
            verb = "holds" if state == LeaseStatus.HELD else "waits for"
            count = f"{len(rows)} lease" + ("s" if len(rows) != 1 else "")
            console.print(f"    {pipeline} {verb} {amounts} ({count}, since {since})")


@quota_app.command("reclaim")
def reclaim() -> None:
    """Expire leases whose holders stopped heartbeating (the daemon does this every tick)."""
    ws = open_workspace(create=False)
    gone = reclaim_expired(ws.store, ws.clock)
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
    ws = open_workspace(create=False)
    require(ws, "pipeline", like if like is not None else pipeline)  # a new one may borrow
    est = estimate_pipeline(ws.store, pipeline, input_rows=input_rows, like=like, margin=margin)
    if as_json:
        print_json(
            {
                "pipeline": est.pipeline,
                "based_on": est.based_on,
                "runs": est.runs,
                "peak": est.peak,
                "duration_s": est.duration_s,
                "notes": est.notes,
                "steps": [
                    {
                        "step": e.step,
                        "runs": e.runs,
                        "memory_bytes": e.memory_bytes,
                        "cpu_seconds": e.cpu_seconds,
                        "cpu": e.cpu_cores,
                        "duration_s": e.duration_s,
                        "memory_model": None
                        if e.memory_model is None
                        else {"exponent": e.memory_model.exponent, "mape": e.memory_model.mape},
                    }
                    for e in est.steps
                ],
            }
        )
        return
    scaled = sum(e.memory_model is not None for e in est.steps)
    if not input_rows:
        size = ""
    elif scaled == len(est.steps):
        size = f", scaled to {input_rows:,} rows"
    elif scaled == 0:
        size = f"; not scaled to {input_rows:,} rows: no step has runs of 3 distinct input sizes"
    else:
        size = f"; {scaled} of {len(est.steps)} steps scaled to {input_rows:,} rows"
    console.print(
        f"[bold]{pipeline}[/]: based on {est.runs} succeeded run{'s' if est.runs != 1 else ''} "
        f"of [bold]{est.based_on}[/], p90 + {margin:.0%} margin{size}"
    )
    for e in est.steps:
        model = ""
        if e.memory_model is not None:
            model = (
                f"  memory ∝ rows^{e.memory_model.exponent:.2f} "
                f"(log-log least squares, MAPE {e.memory_model.mape:.1%} on "
                f"{e.memory_model.points} runs)"
            )
        console.print(
            f"  {e.step:<20} memory {format_amount('memory', e.memory_bytes):>9}  "
            f"cpu {e.cpu_cores:g}  {e.cpu_seconds:.1f} cpu-s  {duration(e.duration_s)}{model}"
        )
    console.print(
        f"  peak along the DAG: cpu {est.peak['cpu']:g}, memory "
        f"{format_amount('memory', est.peak['memory'])}; run time p90 {duration(est.duration_s)}"
    )
    for note in est.notes:
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
    seconds: float = typer.Option(2.0, "--seconds", help="Load-test length."),
) -> None:
    """Replicas by Little's law from a measured latency, N+1 and experiment headroom."""
    ws = open_workspace(create=False)
    if latency_ms is None:
        require(ws, "model", model.partition("@")[0])
    require(ws, "pool", reserve)
    per_replica = parse_amounts({"cpu": cpu, "memory": memory}, what="per replica")
    basis = ""
    if latency_ms is None:
        latency_s, basis = _measure_model(ws, model, seconds)
    else:
        latency_s, basis = latency_ms / 1000, "latency given with --latency-ms"
    plan = serving_replicas(
        qps,
        latency_s,
        concurrency=concurrency,
        target_utilisation=utilisation,
        headroom=ws.settings.quota.experiment_headroom,
        per_replica=per_replica,
    )
    console.print(f"[bold]{model}[/] at {qps:g} QPS: {basis}")
    console.print(
        f"  in flight L = λW = {qps:g} × {latency_s * 1000:.2f} ms = {plan.in_flight:.2f}; "
        f"÷ ({concurrency} × {utilisation:.0%}) → {plan.base_replicas}; N+1 → "
        f"{plan.base_replicas + 1}; headroom +{plan.headroom_replicas} → "
        f"[bold]{plan.replicas} replicas[/]"
    )
    console.print(
        "  asks for "
        + ", ".join(f"{r}={format_amount(r, v)}" for r, v in sorted(plan.resources.items()))
    )
    if p99_ms is not None and latency_s * 1000 > p99_ms:
        console.print(
            f"  [red]one request takes {latency_s * 1000:.1f} ms, over the "
            f"{p99_ms:g} ms p99 target: more replicas will not fix that[/]"
        )
    if reserve:
        now = ws.clock.time()
        with ws.store.session() as s:
            s.merge(
                QuotaReservation(
                    pool=reserve,
                    name=f"serving:{model}",
                    resources=plan.resources,
                    basis=basis,
                    updated_at=now,
                )
            )
        console.print(f"  [green]✓[/] reserved in pool {reserve} (counted by `quota plan`)")


def _measure_model(ws: Any, model: str, seconds: float) -> tuple[float, str]:
    try:
        registry = import_module("shipyard.registry.models")
    except ImportError:
        raise InvalidInput("no model registry here: give --latency-ms") from None
    name, _, alias = model.partition("@")
    models = registry.Registry.of(ws)
    try:
        info, predictor = models.load(name, alias=alias or None)
    except NotFound:
        if alias:
            raise
        # no default alias yet (a first rollout waiting for approvals): the newest version
        info, predictor = models.load(name, version=models.versions(name)[-1].version)
    import numpy as np

    sample = np.zeros((1, len(info.signature.inputs)))
    m = measure_latency(predictor.predict, sample, seconds=seconds)
    return m.p99_s, (
        f"{name} v{info.version} measured here: {m.requests} one-row requests in "
        f"{m.seconds:.1f}s, p50 {m.p50_s * 1000:.2f} ms, p99 {m.p99_s * 1000:.2f} ms (p99 used)"
    )


@quota_app.command("plan")
def plan(as_json: bool = flag("--json", help="Print JSON.")) -> None:
    """Is there enough quota to run all scheduled pipelines over the coming week?"""
    ws = open_workspace(create=False)
    result = plan_from_store(
        ws.store,
        headroom_fraction=ws.settings.quota.experiment_headroom,
        default_pool=ws.settings.quota.default_pool,
        start=ws.clock.time(),
    )
    if as_json:
        print_json(
            {
                "fits": result.fits,
                "notes": result.notes,
                "lines": [
                    {
                        "pool": x.pool,
                        "resource": x.resource,
                        "capacity": x.capacity,
                        "reserved": x.reserved,
                        "scheduled_peak": x.scheduled_peak,
                        "headroom": x.headroom,
                        "peak_at": x.peak_at,
                        "colliding": x.colliding,
                        "fits": x.fits,
                    }
                    for x in result.lines
                ],
            }
        )
        return
    for x in result.lines:
        r = x.resource
        mark = (
            "[green]fits[/]"
            if x.fits
            else f"[red]short by {format_amount(r, x.total - x.capacity)}[/]"
        )
        console.print(f"[bold]{x.pool}[/] {r}: capacity {format_amount(r, x.capacity)} — {mark}")
        console.print(f"  serving reservations  {format_amount(r, x.reserved)}")
        console.print(
            f"  scheduled peak        {format_amount(r, x.scheduled_peak)}"
            + (f" at {when(x.peak_at)}: {', '.join(x.colliding)}" if x.colliding else "")
        )
        console.print(f"  experiment headroom   {format_amount(r, x.headroom)}")
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    if not result.lines:
        console.print("no pools declared: `shipyard quota apply pools.yaml` first")
        raise typer.Exit(1)
    verdict = "enough quota for every pipeline" if result.fits else "NOT enough quota"
    console.print(f"verdict: [bold]{verdict}[/]")
    if not result.fits:
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
    measured = measure_cpu()
    basis = "FLOPs given with --flops"
    if flops is None:
        if not target or ":" not in target:
            raise InvalidInput("give FILE:STEP (with run history) or --flops")
        ws = open_workspace(create=False)
        file, step = target.rsplit(":", 1)
        with ws.store.session() as s:
            from shipyard.store.tables import Run

            cpu_s = [
                float(c)
                for c in s.scalars(
                    select(StepRun.cpu_seconds)
                    .join(Run, Run.id == StepRun.run_id)
                    .where(
                        StepRun.step == step,
                        StepRun.status == StepStatus.SUCCEEDED,
                        Run.file.endswith(os.path.basename(file)),
                    )
                )
                if c
            ]
        if not cpu_s:
            raise NotFound("run history of step", target, "run it once, or give --flops")
        one_thread = next(m.gflops for m in measured if m.threads == 1 and m.dtype == "float64")
        cpu_s.sort()
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
            f"model size asks for {format_amount('memory', work.memory_needed)} "
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
