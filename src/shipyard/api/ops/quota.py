"""``/quota``: pools, their use and leases, the week's plan, estimates, and applying pools.

Reads need ``read``. Applying a pools file needs ``quota.admin`` over ``pool:NAME`` for every
pool it names that exists, and over ``*`` for a pool it would create; a serving reservation
needs it over its pool, and reclaiming expired leases (every pool) over ``*``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from shipyard.api.operations import (
    Context,
    PageQuery,
    Params,
    decode_cursor,
    keyset_page,
    next_cursor,
    operation,
    page,
)
from shipyard.errors import InvalidInput, NotFound
from shipyard.identity import QUOTA_ADMIN, READ
from shipyard.quota.pools import PoolSpec

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from shipyard.quota.pools import Pool
    from shipyard.store.quota import QuotaLease

POOL = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
MAX_POOLS_TEXT = 256 * 1024
"""A pools file is a few hundred bytes; this bounds what the YAML parser is handed."""
LEASE_STATUSES = ("waiting", "held", "released", "expired", "cancelled", "preempted")


class PoolsBody(Params):
    text: str | None = Field(
        None,
        max_length=MAX_POOLS_TEXT,
        description="A pools file's YAML text (`pools: [...]`, as examples/pools.yaml).",
    )
    pools: list[PoolSpec] | None = Field(
        None, min_length=1, max_length=1000, description="…or the same pools, as JSON."
    )
    source: str = Field(
        "request", max_length=300, description="What to call the file in messages (its path)."
    )

    @model_validator(mode="after")
    def _one_of(self) -> PoolsBody:
        if (self.text is None) == (self.pools is None):
            raise ValueError("give the pools file as `text` (YAML) or as `pools` (JSON), not both")
        return self


class LeaseQuery(PageQuery):
    pool: str | None = Field(None, pattern=POOL, description="Only leases in this pool.")
    pipeline: str | None = Field(None, min_length=1, max_length=200, description="Only its.")
    status: Literal[
        "active", "any", "waiting", "held", "released", "expired", "cancelled", "preempted"
    ] = Field("active", description="`active` (held or waiting), `any`, or one status.")


class EstimateQuery(Params):
    input_rows: int | None = Field(
        None, ge=1, le=10**13, description="Scale memory and CPU to this input size."
    )
    like: str | None = Field(
        None, min_length=1, max_length=200, description="Use a similar pipeline's history."
    )
    margin: float = Field(0.2, ge=0, le=10, description="Safety margin on the p90.")


class ServingBody(Params):
    model: str = Field(
        ...,
        min_length=1,
        max_length=240,
        description="A model, or MODEL@ALIAS (default: its default alias, else its newest).",
    )
    qps: float = Field(..., ge=0, le=1e9, description="Predicted peak queries per second.")
    p99_ms: float | None = Field(None, gt=0, le=1e7, description="Latency target, ms.")
    latency_ms: float | None = Field(
        None, gt=0, le=1e7, description="Use this latency instead of measuring the model."
    )
    concurrency: int = Field(1, ge=1, le=100_000, description="Requests one replica serves.")
    utilisation: float = Field(0.7, gt=0, le=1, description="Target busy share of a replica.")
    cpu_per_replica: float = Field(1.0, gt=0, le=10_000, description="CPUs of one replica.")
    memory_per_replica: str = Field(
        "1Gi", min_length=1, max_length=40, description="Memory of one replica (2Gi, 512M)."
    )
    reserve: str | None = Field(
        None, pattern=POOL, description="Record the replicas' resources in this pool."
    )
    seconds: float = Field(
        2.0, ge=0.05, le=10, description="How long to measure the model (closed loop)."
    )


class StepCpuQuery(Params):
    file: str = Field(..., min_length=1, max_length=300, description="The pipeline file.")
    step: str = Field(..., min_length=1, max_length=200, description="The step.")


# -- reading -----------------------------------------------------------------------------------


def pool_dict(pool: Pool) -> dict[str, Any]:
    return {
        "name": pool.name,
        "mode": pool.mode,
        "capacity": dict(pool.capacity),
        "default_cap_fraction": pool.default_cap_fraction,
        "policy": pool.policy.to_json(),
        "members": {
            m.pipeline: {
                "share": dict(m.share),
                "cap": dict(m.cap),
                "weight": m.weight,
                "max_queued_runs": m.max_queued_runs,
            }
            for m in pool.members.values()
        },
    }


def lease_dict(row: QuotaLease) -> dict[str, Any]:
    return {
        "id": row.id,
        "pool": row.pool,
        "pipeline": row.pipeline,
        "run_id": row.run_id or None,
        "step": row.step,
        "status": row.status,
        "resources": {r: float(v) for r, v in row.resources.items()},
        "used": {r: float(v) for r, v in row.used.items()},
        "since": row.requested_at,
        "granted_at": row.granted_at,
        "expires_at": row.expires_at,
        "ended_at": row.ended_at,
        "reason": row.reason,
    }


def _sum(into: dict[str, float], amounts: dict[str, Any]) -> None:
    for r, v in amounts.items():
        into[r] = into.get(r, 0.0) + float(v)


@operation("GET", "/quota/pools", name="quota.pool.list")
def list_pools(ctx: Context, *, query: PageQuery) -> dict[str, Any]:
    """The pools, by name: capacity, and each member's guaranteed share, cap and weight."""
    from sqlalchemy import select

    from shipyard.quota.pools import load_pool
    from shipyard.store.quota import QuotaPool

    ctx.require(READ)
    after = decode_cursor("quota.pool.list", query.cursor, str)
    with ctx.ws.store.session() as s:
        names = select(QuotaPool.name).order_by(QuotaPool.name).limit(query.limit + 1)
        if after is not None:
            names = names.where(QuotaPool.name > after[0])
        found = list(s.scalars(names))
        pools = [pool_dict(load_pool(s, n)) for n in found[: query.limit]]
    return page(pools, next_cursor("quota.pool.list", found, query.limit, lambda n: (n,)))


@operation("GET", "/quota/pools/{name}", name="quota.pool.show")
def show_pool(ctx: Context, *, name: str) -> dict[str, Any]:
    """One pool: its terms, what each member holds now, who waits, and its standing
    reservations."""
    from sqlalchemy import select

    from shipyard.quota.pools import load_pool
    from shipyard.statuses import LEASE_ACTIVE
    from shipyard.store.quota import QuotaLease, QuotaReservation

    ctx.require(READ)
    with ctx.ws.store.session() as s:
        pool = load_pool(s, name)
        leases = list(
            s.scalars(
                select(QuotaLease).where(
                    QuotaLease.pool == name, QuotaLease.status.in_(LEASE_ACTIVE)
                )
            )
        )
        reservations = list(
            s.scalars(
                select(QuotaReservation)
                .where(QuotaReservation.pool == name)
                .order_by(QuotaReservation.name)
            )
        )
    shown = pool_dict(pool)
    held: dict[str, float] = {r: 0.0 for r in pool.capacity}
    by_member: dict[str, dict[str, Any]] = {}
    for x in leases:
        mine = by_member.setdefault(x.pipeline, {"held": {}, "waiting": 0})
        if x.status == "held":
            _sum(mine["held"], x.resources)
            _sum(held, x.resources)
        else:
            mine["waiting"] += 1
    for pipeline, terms in shown["members"].items():
        terms.update(by_member.pop(pipeline, {"held": {}, "waiting": 0}))
    shown["held"] = held
    shown["borrowers"] = dict(sorted(by_member.items()))  # not members: they only borrow
    shown["reservations"] = [
        {
            "name": r.name,
            "resources": {k: float(v) for k, v in r.resources.items()},
            "basis": r.basis,
            "updated_at": r.updated_at,
        }
        for r in reservations
    ]
    return shown


def _forecasts(
    s: Session, series: list[tuple[str, str]]
) -> dict[tuple[str, str], tuple[float | None, float | None]]:
    """For each (pool, resource): when its usage series was last sampled and the time to
    exhaustion forecast then, if any (what the daemon's ``quota.usage`` task last wrote). Three
    queries whatever the number of pools, each on the series index."""
    from sqlalchemy import and_, func, or_, select

    from shipyard.quota.usage import POOL_RESERVED, TIME_TO_EXHAUSTION
    from shipyard.store.tables import MetricPoint, labels_key

    keys = {labels_key({"pool": p, "resource": r}): (p, r) for p, r in series}
    found: dict[tuple[str, str], tuple[float | None, float | None]] = {
        pair: (None, None) for pair in series
    }
    if not keys:
        return found

    def latest(name: str) -> dict[str, float]:
        rows = s.execute(
            select(MetricPoint.labels_key, func.max(MetricPoint.ts))
            .where(MetricPoint.name == name, MetricPoint.labels_key.in_(list(keys)))
            .group_by(MetricPoint.labels_key)
        )
        return {key: float(ts) for key, ts in rows}

    sampled = latest(POOL_RESERVED)
    # a forecast counts only if the last sample made one (a later sample without one ends it)
    current = {k: ts for k, ts in latest(TIME_TO_EXHAUSTION).items() if sampled.get(k) == ts}
    values: dict[str, float] = {}
    if current:
        rows = s.execute(
            select(MetricPoint.labels_key, MetricPoint.value).where(
                MetricPoint.name == TIME_TO_EXHAUSTION,
                or_(
                    *(
                        and_(MetricPoint.labels_key == k, MetricPoint.ts == ts)
                        for k, ts in current.items()
                    )
                ),
            )
        )
        values = {key: float(value) for key, value in rows}
    for key, ts in sampled.items():
        found[keys[key]] = (ts, values.get(key))
    return found


@operation("GET", "/quota/status", name="quota.status")
def status(ctx: Context) -> dict[str, Any]:
    """Each pool's use per resource (reserved by held leases, measured use, the last forecast
    of exhaustion), who holds what and who waits.

    Reserved and used are read from the leases now; the forecast is the one the daemon's usage
    task last recorded (`sampled_at`), as this read writes nothing."""
    from sqlalchemy import select

    from shipyard.quota.pools import list_pools as all_pools
    from shipyard.statuses import LEASE_ACTIVE
    from shipyard.store.quota import QuotaLease

    ctx.require(READ)
    pools = all_pools(ctx.ws.store)
    with ctx.ws.store.session() as s:
        leases = list(
            s.scalars(
                select(QuotaLease)
                .where(
                    # every lease's pool is one of these (a foreign key): naming them lets the
                    # (pool, status) index find the active few among all the ended ones
                    QuotaLease.pool.in_([p.name for p in pools]),
                    QuotaLease.status.in_(LEASE_ACTIVE),
                )
                .order_by(QuotaLease.requested_at, QuotaLease.id)
            )
        )
        forecasts = _forecasts(s, [(p.name, r) for p in pools for r in p.capacity])
    shown = []
    for pool in pools:
        mine = [x for x in leases if x.pool == pool.name]
        reserved: dict[str, float] = {r: 0.0 for r in pool.capacity}
        used: dict[str, float] = {r: 0.0 for r in pool.capacity}
        holders: dict[tuple[str, str], dict[str, Any]] = {}
        for x in mine:
            if x.status == "held":
                _sum(reserved, x.resources)
                _sum(used, x.used)
            group = holders.setdefault(
                (x.pipeline, x.status),
                {
                    "pipeline": x.pipeline,
                    "status": x.status,
                    "leases": 0,
                    "resources": {},
                    "since": x.requested_at,
                },
            )
            group["leases"] += 1
            _sum(group["resources"], x.resources)
            group["since"] = min(group["since"], x.requested_at)
        resources = {}
        for r, capacity in sorted(pool.capacity.items()):
            sampled_at, seconds = forecasts[(pool.name, r)]
            resources[r] = {
                "capacity": capacity,
                "reserved": reserved[r],
                "used": used[r],
                "used_fraction": reserved[r] / capacity if capacity > 0 else 0.0,
                "time_to_exhaustion_s": seconds,
                "sampled_at": sampled_at,
            }
        shown.append(
            {
                "name": pool.name,
                "mode": pool.mode,
                "policy": pool.policy.to_json(),
                "resources": resources,
                "holders": [holders[k] for k in sorted(holders)],
                "waiting": sum(1 for x in mine if x.status == "waiting"),
            }
        )
    return {"pools": shown, "at": ctx.now}


@operation("GET", "/quota/leases", name="quota.lease.list")
def list_leases(ctx: Context, *, query: LeaseQuery) -> dict[str, Any]:
    """Leases, oldest request first: active ones (held or waiting) unless asked otherwise.

    Paged by (requested time, id)."""
    from sqlalchemy import select

    from shipyard.statuses import LEASE_ACTIVE
    from shipyard.store.quota import QuotaLease, QuotaPool

    ctx.require(READ)
    if query.pool is not None:
        _require_named(ctx, "pool", query.pool)
    if query.pipeline is not None:
        _require_lease_pipeline(ctx, query.pipeline)
    found = select(QuotaLease)
    if query.status == "active":
        found = found.where(QuotaLease.status.in_(LEASE_ACTIVE))
    elif query.status != "any":
        found = found.where(QuotaLease.status == query.status)
    if query.pool is not None:
        found = found.where(QuotaLease.pool == query.pool)
    elif query.status != "any":
        # every lease's pool is a pool (a foreign key): naming them lets the (pool, status)
        # index find the leases of a status without reading the ended ones
        found = found.where(QuotaLease.pool.in_(select(QuotaPool.name).scalar_subquery()))
    if query.pipeline is not None:
        found = found.where(QuotaLease.pipeline == query.pipeline)
    order = (QuotaLease.requested_at, QuotaLease.id)
    return keyset_page(ctx, "quota.lease.list", found, order, query, lease_dict)


@operation("GET", "/quota/plan", name="quota.plan")
def plan(ctx: Context) -> dict[str, Any]:
    """Is there enough quota for every scheduled pipeline over the coming week?

    Per pool and resource: standing (serving) reservations, live serving and other standing
    leases beyond them, the leases of runs in progress and the scheduled runs at the peak
    instant (each at its estimated demand, from history), and experiment headroom, against
    capacity."""
    from shipyard.quota.plan import LiveServer, plan_from_store
    from shipyard.serving.instances import live_instances

    ctx.require(READ)
    settings = ctx.ws.settings.quota
    servers = [
        LiveServer(i.lease_id, tuple(i.models))
        for i in live_instances(ctx.ws.store, ctx.now)
        if i.lease_id
    ]
    result = plan_from_store(
        ctx.ws.store,
        headroom_fraction=settings.experiment_headroom,
        default_pool=settings.default_pool,
        start=ctx.now,
        servers=servers,
    )
    return {
        "fits": result.fits,
        "start": result.start,
        "notes": list(result.notes),
        "lines": [
            {
                "pool": x.pool,
                "resource": x.resource,
                "capacity": x.capacity,
                "reserved": x.reserved,
                "serving": x.serving,
                "holders": list(x.holders),
                "running": x.running,
                "scheduled_peak": x.scheduled_peak,
                "headroom": x.headroom,
                "total": x.total,
                "peak_at": x.peak_at,
                "colliding": list(x.colliding),
                "fits": x.fits,
            }
            for x in result.lines
        ],
    }


def _require_lease_pipeline(ctx: Context, name: str) -> None:
    """NotFound, with suggestions, unless ``name`` is a pipeline here or holds a lease."""
    from sqlalchemy import select

    from shipyard.store.quota import QuotaLease
    from shipyard.store.tables import PipelineRecord

    with ctx.ws.store.session(readonly=True) as s:
        if s.scalar(select(QuotaLease.id).where(QuotaLease.pipeline == name).limit(1)):
            return
        if s.scalar(select(PipelineRecord.name).where(PipelineRecord.name == name)):
            return
        known = set(s.scalars(select(PipelineRecord.name)))
    raise NotFound("pipeline", name, candidates=known)


def _require_named(ctx: Context, kind: str, name: str) -> None:
    """NotFound, with suggestions, unless ``name`` is a pipeline or pool here."""
    from sqlalchemy import select

    from shipyard.store.quota import QuotaPool
    from shipyard.store.tables import PipelineRecord

    column = {"pipeline": PipelineRecord.name, "pool": QuotaPool.name}[kind]
    with ctx.ws.store.session() as s:
        if s.scalar(select(column).where(column == name)) is not None:
            return
        known = list(s.scalars(select(column)))
    raise NotFound(kind, name, candidates=known)


@operation("GET", "/quota/estimates/{pipeline}", name="quota.estimate")
def estimate(ctx: Context, *, pipeline: str, query: EstimateQuery) -> dict[str, Any]:
    """A pipeline's per-step p90 memory and CPU from its succeeded runs (or a similar
    pipeline's, `like`), scaled to an input size when the history allows, and its peak."""
    from shipyard.quota.estimate import estimate_pipeline

    ctx.require(READ)
    # a new pipeline may borrow a known one's history
    _require_named(ctx, "pipeline", query.like if query.like is not None else pipeline)
    est = estimate_pipeline(
        ctx.ws.store,
        pipeline,
        input_rows=query.input_rows,
        like=query.like,
        margin=query.margin,
    )
    return {
        "pipeline": est.pipeline,
        "based_on": est.based_on,
        "runs": est.runs,
        "input_rows": est.input_rows,
        "margin": est.margin,
        "peak": est.peak,
        "duration_s": est.duration_s,
        "notes": list(est.notes),
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
                else {
                    "exponent": e.memory_model.exponent,
                    "mape": e.memory_model.mape,
                    "points": e.memory_model.points,
                },
            }
            for e in est.steps
        ],
    }


@operation("GET", "/quota/step-cpu", name="quota.step_cpu")
def step_cpu(ctx: Context, *, query: StepCpuQuery) -> dict[str, Any]:
    """The CPU-seconds of a step's succeeded runs (of pipelines from a file of that name):
    what the hardware advisor scales from."""
    import os

    from sqlalchemy import select

    from shipyard.statuses import StepStatus
    from shipyard.store.tables import Run, StepRun

    ctx.require(READ)
    with ctx.ws.store.session() as s:
        found = [
            float(c)
            for c in s.scalars(
                select(StepRun.cpu_seconds)
                .join(Run, Run.id == StepRun.run_id)
                .where(
                    StepRun.step == query.step,
                    StepRun.status == StepStatus.SUCCEEDED,
                    Run.file.endswith(os.path.basename(query.file), autoescape=True),
                )
                .limit(100_000)
            )
            if c
        ]
    return {"file": query.file, "step": query.step, "cpu_seconds": found}


# -- estimates that may write ------------------------------------------------------------------


def _measure_model(ctx: Context, model: str, seconds: float) -> tuple[float, str]:
    """The p99 latency of one-row requests to ``model`` measured here, and how it was had."""
    from importlib import import_module

    from shipyard.quota.estimate import measure_latency

    try:
        registry = import_module("shipyard.registry.models")
    except ImportError:
        raise InvalidInput("no model registry here: give latency_ms") from None
    name, _, alias = model.partition("@")
    models = registry.Registry.of(ctx.ws)
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


@operation("POST", "/quota/serving", name="quota.serving")
def serving(ctx: Context, *, body: ServingBody) -> dict[str, Any]:
    """Replicas for a model at a predicted QPS by Little's law (L = λW), N+1, and experiment
    headroom; with `reserve`, record their resources in that pool for the plan.

    The latency W is `latency_ms` when given, else the p99 of the model measured on the server
    for `seconds`. Reserving needs quota-admin over the pool."""
    from shipyard.quota.estimate import serving_replicas
    from shipyard.quota.resources import parse_amounts

    ctx.require(READ)
    if body.reserve is not None:
        ctx.require(QUOTA_ADMIN, f"pool:{body.reserve}")
        _require_named(ctx, "pool", body.reserve)
    per_replica = parse_amounts(
        {"cpu": body.cpu_per_replica, "memory": body.memory_per_replica}, what="per replica"
    )
    if body.latency_ms is None:
        _require_named_model(ctx, body.model.partition("@")[0])
        latency_s, basis = _measure_model(ctx, body.model, body.seconds)
    else:
        latency_s, basis = body.latency_ms / 1000, "latency given with --latency-ms"
    sized = serving_replicas(
        body.qps,
        latency_s,
        concurrency=body.concurrency,
        target_utilisation=body.utilisation,
        headroom=ctx.ws.settings.quota.experiment_headroom,
        per_replica=per_replica,
    )
    if body.reserve is not None:
        _reserve(ctx, body.reserve, f"serving:{body.model}", sized.resources, basis)
    return {
        "model": body.model,
        "qps": sized.peak_qps,
        "latency_s": sized.latency_s,
        "basis": basis,
        "in_flight": sized.in_flight,
        "base_replicas": sized.base_replicas,
        "replicas": sized.replicas,
        "headroom_replicas": sized.headroom_replicas,
        "concurrency": sized.concurrency,
        "target_utilisation": sized.target_utilisation,
        "resources": sized.resources,
        "over_p99_target": body.p99_ms is not None and latency_s * 1000 > body.p99_ms,
        "reserved_in": body.reserve,
    }


def _require_named_model(ctx: Context, name: str) -> None:
    from sqlalchemy import select

    from shipyard.store.registry import RegisteredModel

    with ctx.ws.store.session() as s:
        if s.scalar(select(RegisteredModel.name).where(RegisteredModel.name == name)) is None:
            raise NotFound("model", name, candidates=s.scalars(select(RegisteredModel.name)))


def _reserve(ctx: Context, pool: str, name: str, resources: dict[str, float], basis: str) -> None:
    """Create or replace a standing reservation, audited (``pool.reserve``) in the same
    transaction."""
    from shipyard import audit
    from shipyard.store.quota import QuotaReservation

    with ctx.ws.store.session(immediate=True) as s:
        s.merge(
            QuotaReservation(
                pool=pool, name=name, resources=resources, basis=basis, updated_at=ctx.now
            )
        )
        audit.record(
            s,
            actor=ctx.actor,
            action="pool.reserve",
            subject=("pool", pool),
            details={"name": name, "resources": resources, "basis": basis},
            now=ctx.now,
        )


# -- changing pools ----------------------------------------------------------------------------


def _parse_text(text: str, source: str) -> Any:
    """The YAML of a pools file, refusing aliases (``*name``): a few of them can make a small
    document stand for an enormous one, and a pools file has no need of them."""
    import yaml

    from shipyard.config import yaml_error_line

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise InvalidInput(
                    f"{source}: line {mark.line + 1}: YAML aliases (*name) are not accepted in "
                    "a pools file; write the values out"
                )
            return super().compose_node(parent, index)

    try:
        return yaml.load(text, Loader=NoAliases)  # a SafeLoader
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{source} is not valid YAML: {yaml_error_line(exc)}") from None
    except RecursionError:
        raise InvalidInput(f"{source} is nested too deeply to be a pools file") from None


def read_pools(body: PoolsBody, default_cap_fraction: float) -> list[Pool]:
    """The pools of a request, validated as ``quota apply`` validates a file: any problem is
    one :class:`InvalidInput` naming it, and nothing is changed."""
    from pydantic import ValidationError

    from shipyard.quota.pools import PoolFile, resolve

    where = body.source
    if body.pools is not None:
        specs = list(body.pools)
    else:
        assert body.text is not None
        raw = _parse_text(body.text, where)
        if raw is None:
            raise InvalidInput(
                f"{where} is empty; nothing was changed (a pools file lists `pools:`, "
                "as examples/pools.yaml does)"
            )
        if not isinstance(raw, dict):
            raise InvalidInput(
                f"{where} holds a {type(raw).__name__}, not a mapping with `pools:`; "
                "nothing was changed"
            )
        try:
            specs = PoolFile.model_validate(raw).pools
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidInput(f"{where}: {problems}") from None
    if not specs:
        raise InvalidInput(f"{where}: `pools:` lists no pool; nothing was changed")
    names = [p.name for p in specs]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise InvalidInput(f"{where}: pool {', '.join(twice)} appears twice")
    try:
        return [resolve(p, default_cap_fraction) for p in specs]
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc}") from None


def _holds_quota_admin(ctx: Context) -> bool:
    from shipyard.identity import ROLES

    return any(QUOTA_ADMIN in ROLES.get(b.role, ()) for b in ctx.principal.bindings)


@operation("POST", "/quota/pools/apply", name="quota.apply")
def apply(ctx: Context, *, body: PoolsBody) -> dict[str, Any]:
    """Create or replace the pools a pools file declares, in one transaction.

    The file is validated first (shares within caps, guaranteed shares within capacity, known
    quantities); a problem is a 400 naming it, and nothing changes. Needs quota-admin over
    `pool:NAME` for each existing pool it names, and over `*` for each new one. Each pool's new
    definition is audited (`pool.apply`)."""
    from sqlalchemy import select

    from shipyard.quota.pools import apply_pools
    from shipyard.store.quota import QuotaPool

    if not _holds_quota_admin(ctx):
        ctx.require(QUOTA_ADMIN)  # refused before the file is read
    pools = read_pools(body, ctx.ws.settings.quota.default_cap_fraction)
    with ctx.ws.store.session() as s:
        existing = set(
            s.scalars(select(QuotaPool.name).where(QuotaPool.name.in_([p.name for p in pools])))
        )
    # pools are never deleted, so one that exists now still exists when they are applied
    for pool in pools:
        ctx.require(QUOTA_ADMIN, f"pool:{pool.name}" if pool.name in existing else None)
    apply_pools(ctx.ws.store, pools, ctx.ws.clock, actor=ctx.actor)
    return {"applied": [{**pool_dict(p), "created": p.name not in existing} for p in pools]}


@operation("POST", "/quota/reclaim", name="quota.reclaim")
def reclaim(ctx: Context) -> dict[str, Any]:
    """Expire the leases whose holders stopped renewing them, in every pool, and admit who
    waits (the daemon does this every few seconds). Needs quota-admin over `*`."""
    from shipyard.quota.admission import reclaim_expired

    ctx.require(QUOTA_ADMIN)
    return {"reclaimed": reclaim_expired(ctx.ws.store, ctx.ws.clock)}
