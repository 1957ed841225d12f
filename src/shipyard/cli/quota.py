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


def _policy(policy: dict[str, Any]) -> str:
    """A pool's scheduling policy in one line: backfill (and the grace of a lease that yields),
    preemption (and its grace), when a lease taken back frees its room if not on its stop,
    queue limit."""
    backfill = "on" if policy["backfill"] else "off"
    if policy["backfill"] and policy.get("backfill_grace_s"):
        backfill += f" (yields within {duration(policy['backfill_grace_s'])})"
    preemption = policy["preemption"]
    if preemption != "never":
        preemption += f" (grace {duration(policy['preemption_grace_s'])})"
    if policy.get("quota_release") == "on-terminating":
        preemption += "; a lease taken back frees its room when told to stop (on-terminating)"
    limit = policy["max_queued_runs"]
    queued = "no limit" if limit is None else str(limit)
    return f"backfill {backfill}; preemption {preemption}; queued runs per pipeline: {queued}"


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
        console.print(f"  {_policy(p['policy'])}")
        for r, v in sorted(p["capacity"].items()):
            console.print(f"  {r:<10} {_amount(r, v)}")
        for pipeline, m in p["members"].items():
            queued = m.get("max_queued_runs")
            console.print(
                f"  member {pipeline}: share {_amounts(m['share'])}; cap {_amounts(m['cap'])}; "
                f"weight {m['weight']:g}"
                + (f"; queued runs {queued}" if queued is not None else "")
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
        console.print(f"  {_policy(pool['policy'])}")
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
    target: str | None = typer.Argument(
        None, help="FILE:STEP whose run history gives the training FLOPs."
    ),
    parameters: float = typer.Option(
        0.0, "--params", help="The model's parameters (7e9): sizes memory, FLOPs and serving."
    ),
    tokens: float | None = typer.Option(
        None, "--tokens", help="Training tokens (default: 20 per parameter, Chinchilla)."
    ),
    flops: float | None = typer.Option(
        None, "--flops", help="FLOPs of one training run (instead of 6 × params × tokens)."
    ),
    bytes_moved: float = typer.Option(0.0, "--bytes", help="Bytes one training run moves."),
    qps: float = typer.Option(1.0, "--qps", help="Predicted peak queries per second to serve."),
    p99_ms: float | None = typer.Option(
        None, "--p99-ms", help="Latency target: slower options are infeasible."
    ),
    tokens_per_request: float = typer.Option(
        1.0, "--tokens-per-request", help="Forward passes per request (generated tokens)."
    ),
    only: str | None = typer.Option(None, "--only", help="training or serving: advise one."),
    price: float | None = typer.Option(None, "--local-price", help="This machine, USD/hour."),
    as_json: bool = flag("--json", help="Print JSON."),
) -> None:
    """Where to train and where to serve: the smallest feasible hardware, ranked by cost.

    Answers four questions, each with its basis. [bold]What does the model's size ask
    for?[/] Training with Adam keeps 16 bytes per parameter, serving 2. [bold]Can it run on
    cheaper hardware?[/] and [bold]would other hardware be faster?[/] Each device of the
    catalogue (GPUs, TPUs, CPU machines, every figure cited) and this machine (measured) gets
    the smallest number of devices that holds the model; more than one means model parallel
    (the model sharded), and options that cannot hold it are listed apart, never ranked.
    Peaks are scaled by the share of peak that published runs reach (MFU 38-46 % for
    training, MBU about 60 % for serving: sources in the catalogue). [bold]Train on one,
    serve on another?[/] Training is ranked by cost per run (throughput per dollar), serving
    by cost per hour at the predicted QPS, with replicas by Little's law.

    Examples: `shipyard hardware advise --params 7e9` (a 7B model: training on 20 tokens per
    parameter, serving at 1 QPS); `shipyard hardware advise --params 1.3e8 --tokens 2e10 --qps
    200 --p99-ms 50`; `shipyard hardware advise pipelines/train.py:fit` (FLOPs from the step's
    measured CPU-seconds).
    """
    import psutil

    from shipyard.quota.hardware import (
        ServingJob,
        ThisMachine,
        TrainingJob,
        advise_serving,
        advise_training,
        load_catalogue,
        measure_bandwidth,
        measure_cpu,
    )

    if only not in (None, "training", "serving"):
        raise InvalidInput("--only takes training or serving")
    if parameters < 0:
        raise InvalidInput("--params must be a positive number of parameters")
    if flops is None and not parameters and (not target or ":" not in target):
        raise InvalidInput("give --params, --flops or FILE:STEP (with run history)")
    if only == "serving" and not parameters:
        raise InvalidInput("serving advice needs --params (the model's parameters)")
    catalogue = load_catalogue()
    measured = measure_cpu(seconds=0.15)  # 30+ products of 512² per point: steady enough
    here = ThisMachine.of(
        measured,
        bandwidth=measure_bandwidth(),
        memory=float(psutil.virtual_memory().total),
        price_per_hour=price,
    )
    advice = []
    if only != "serving":
        if flops is not None:
            job = TrainingJob(flops, parameters, bytes_moved, "FLOPs given with --flops")
        elif target and ":" in target:
            job = _job_from_history(target, measured, parameters, bytes_moved)
        else:
            job = TrainingJob.from_size(parameters, tokens)
            job = TrainingJob(job.flops, parameters, bytes_moved, job.basis)
        advice.append(advise_training(job, here, catalogue))
    if only != "training" and parameters:
        serving_job = ServingJob(
            parameters, qps, tokens_per_request, p99_ms / 1000 if p99_ms is not None else None
        )
        advice.append(advise_serving(serving_job, here, catalogue))
    if as_json:
        import dataclasses

        print_json(
            [
                {
                    **dataclasses.asdict(a),
                    "best": dataclasses.asdict(a.best) if a.best else None,
                }
                for a in advice
            ]
        )
        return
    for a in advice:
        _print_advice(a)
    _print_answers(advice, here)


def _job_from_history(
    target: str, measured: list[Any], parameters: float, bytes_moved: float
) -> Any:
    from shipyard.quota.hardware import TrainingJob

    file, step = target.rsplit(":", 1)
    cpu_s = sorted(_call("quota.step_cpu", file=file, step=step)["cpu_seconds"])
    if not cpu_s:
        raise NotFound("run history of step", target, "run it once, or give --flops")
    one_thread = next(m.gflops for m in measured if m.threads == 1 and m.dtype == "float64")
    p90 = cpu_s[min(len(cpu_s) - 1, math.ceil(0.9 * len(cpu_s)) - 1)]
    basis = (
        f"p90 {p90:.1f} CPU-s over {len(cpu_s)} runs × {one_thread:.1f} GFLOP/s (1 thread, "
        "measured): assumes the step is matmul-bound"
    )
    return TrainingJob(p90 * one_thread * 1e9, parameters, bytes_moved, basis)


def _money(value: float | None, unit: str) -> str:
    if value is None:
        return "no price"
    return f"${value:,.0f}{unit}" if value >= 100 else f"${value:.3g}{unit}"


def _print_advice(a: Any) -> None:
    training = a.purpose == "training"
    header = (
        "TRAINING, ranked by cost per run (throughput per dollar)"
        if training
        else "SERVING, ranked by cost per hour at the predicted QPS"
    )
    console.print(f"[bold]{header}[/]")
    console.print(f"  work: {escape(a.basis)}")
    if a.memory_needed:
        console.print(
            f"  the model asks for {a.memory_needed / 1e9:.1f} GB "
            + (
                "(16 B/param: weights, gradients, Adam state)"
                if training
                else "(2 B/param: fp16/bf16 weights)"
            )
        )
    for i, o in enumerate(a.ranked, 1):
        if training:
            figure = f"{_seconds(o.seconds)} a run, {_money(o.cost, ' a run')}"
        else:
            figure = (
                f"{o.seconds * 1000:.3g} ms a request, {o.replicas} replica"
                f"{'s' if o.replicas > 1 else ''}, {_money(o.cost, '/h')}"
            )
        console.print(
            f"  {i}. [bold]{o.devices} × {o.name}[/]: {figure} {escape(f'[{o.provenance}]')}"
        )
        console.print(f"     {escape(o.split)}; {escape(o.detail)}")
    if a.infeasible:
        console.print("  [red]infeasible (not ranked):[/]")
        for o in a.infeasible:
            console.print(f"     {o.name:<26} {escape(o.why_not)}")
    for note in a.notes:
        console.print(f"  [yellow]note:[/] {escape(note)}")


def _print_answers(advice: list[Any], here: Any) -> None:
    by = {a.purpose: a for a in advice}
    console.print("[bold]ANSWERS[/]")
    train, serve = by.get("training"), by.get("serving")
    if train is not None:
        best, fastest = train.best, train.fastest
        if best is None:
            console.print("  training: nothing catalogued holds the model")
        else:
            console.print(
                f"  train on {best.devices} × {best.name} ({escape(best.split)}): "
                f"{_seconds(best.seconds)}, {_money(best.cost, ' per run')}, the cheapest "
                "feasible run"
                + (
                    "; data parallel over more of them divides the time and keeps the cost "
                    "per run (ideal scaling)"
                    if best.kind != "cpu"
                    else ""
                )
            )
            local = next((o for o in train.ranked if o.name.startswith("this machine")), None)
            if fastest is not None and fastest is not best:
                console.print(
                    f"  fastest at the smallest size that holds it: {fastest.devices} × "
                    f"{fastest.name} in {_seconds(fastest.seconds)} "
                    f"({_money(fastest.cost, ' per run')})"
                )
            if local is not None and local is not best:
                console.print(
                    f"  this machine (measured): {_seconds(local.seconds)} per run"
                    + (
                        f", {local.seconds / best.seconds:.3g}× the proposal's time"
                        if best.seconds
                        else ""
                    )
                )
    if serve is not None:
        best = serve.best
        if best is None:
            console.print("  serving: nothing catalogued meets the target")
        else:
            console.print(
                f"  serve on {best.replicas} replicas of {best.devices} × {best.name} "
                f"({escape(best.split)}): {best.seconds * 1000:.3g} ms a request, "
                f"{_money(best.cost, '/h')} at the predicted QPS, the cheapest feasible"
            )
    if train is not None and serve is not None and train.best and serve.best:
        if train.best.kind != serve.best.kind:
            console.print(
                f"  so: train on {train.best.kind.upper()}s, serve on {serve.best.kind.upper()}s"
            )
        else:
            console.print(f"  so: train and serve on {train.best.kind.upper()}s")


def _seconds(value: float) -> str:
    if value >= 2 * 86400:
        return f"{value / 86400:,.1f} days"
    return f"{value:.3g}s" if value < 60 else duration(value)


def register(app: typer.Typer) -> None:
    app.add_typer(quota_app, name="quota")
    app.add_typer(hardware_app, name="hardware")
