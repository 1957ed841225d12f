"""Pool definitions: capacity per resource, dedicated or shared, members with share and cap.

A pool file (``shipyard quota apply pools.yaml``)::

    pools:
      - name: shared
        mode: shared                 # or: dedicated (then name its owner)
        capacity: {cpu: 8, memory: 32Gi, gpu: 2}
        default_cap_fraction: 0.5    # optional; else settings.quota.default_cap_fraction
        members:
          - pipeline: etl
            share: 0.25              # a fraction of every resource, or {cpu: 2, memory: 8Gi}
            cap: 0.5                 # same forms; default: default_cap_fraction of the pool
            weight: 1                # fair-share weight (Kueue's fairSharing.weight)
            max_queued_runs: 5       # optional; else the pool's max_queued_runs
        preemption: borrowers        # never (default) | borrowers | lower-priority
        preemption_grace_s: 30       # SIGTERM, then SIGKILL this long after
        quota_release: on-terminal   # or on-terminating: a taken-back lease's room is free at once
        backfill: true               # default; false: strict order (no request passes the head)
        backfill_grace_s: 0          # a backfilled lease stops this long after yielding
        max_queued_runs: 10          # optional: runs of one pipeline waiting in the pool
      - name: trainer
        mode: dedicated
        owner: train
        capacity: {cpu: 4, memory: 16Gi}

In a shared pool a pipeline that is not a member gets no guaranteed share (it only borrows idle
capacity) and the default cap. A dedicated pool admits only its owner, up to the whole pool.

The scheduling policy (:class:`PoolPolicy`) says whether a blocked head may be backfilled around,
whether and whom the pool preempts to give a member its guaranteed share back (Kueue's
``reclaimWithinCohort`` / ``withinClusterQueue``, whose default is likewise ``Never``), and how
many runs of one pipeline may wait in its queue; :mod:`shipyard.quota.admission` applies it.

``quota_release`` is Kueue's ``quotaReleaseStrategy``: when a lease is taken back (preempted, or
yielding to a request backfill passed), its room counts as held until its holder has stopped
(``on-terminal``, the default: the pool is never over its capacity, so a request that preempts
waits up to the grace period) or is free as soon as the holder is told to stop
(``on-terminating``: the request starts at once, and for up to the grace period the stopping
holders and it run side by side, over the pool's capacity, as Kueue's ``OnTerminating``
allows for batch Jobs). Choose ``on-terminating`` for resources that can be briefly
oversubscribed (CPU time), never for ones that cannot (GPU memory).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from shipyard import audit
from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.config import yaml_error_line
from shipyard.errors import ConfigError, InvalidInput, NotFound, QuotaError, QuotaExceeded
from shipyard.quota.resources import EPSILON, Amounts, first_excess, parse_amounts
from shipyard.store import Store
from shipyard.store.quota import QuotaMember, QuotaPool

Portion = float | dict[str, float | int | str]
PREEMPTION = ("never", "borrowers", "lower-priority")
"""``never``: nothing is taken back; ``borrowers``: leases of pipelines above their guaranteed
share are preempted for a member waiting within its own share; ``lower-priority``: that, and
any lease of lower priority than a waiting request."""


class MemberSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pipeline: str = Field(min_length=1, max_length=200)
    share: Portion = 0.0
    cap: Portion | None = None
    weight: float = Field(1.0, gt=0)
    max_queued_runs: int | None = Field(None, ge=1)


class PoolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    mode: Literal["shared", "dedicated"] = "shared"
    capacity: dict[str, float | int | str]
    default_cap_fraction: float | None = Field(None, gt=0, le=1)
    owner: str | None = None
    members: list[MemberSpec] = []
    preemption: str = "never"
    preemption_grace_s: float = Field(30.0, ge=0, le=86400)
    backfill: bool = True
    backfill_grace_s: float = Field(0.0, ge=0, le=86400)
    max_queued_runs: int | None = Field(None, ge=1)
    quota_release: Literal["on-terminal", "on-terminating"] = "on-terminal"

    @field_validator("preemption")
    @classmethod
    def _known_preemption(cls, value: str) -> str:
        if value not in PREEMPTION:
            raise ValueError(f"preemption is one of {', '.join(PREEMPTION)}, not {value!r}")
        return value

    @model_validator(mode="after")
    def _dedicated_has_owner(self) -> PoolSpec:
        if self.mode == "dedicated" and not self.owner:
            raise ValueError("a dedicated pool names its owner pipeline (owner: …)")
        if self.mode == "shared" and self.owner:
            raise ValueError("owner is only for dedicated pools")
        return self


class PoolFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pools: list[PoolSpec]


@dataclass(frozen=True)
class Member:
    pipeline: str
    share: Amounts
    cap: Amounts
    weight: float = 1.0
    max_queued_runs: int | None = None


@dataclass(frozen=True)
class PoolPolicy:
    """How a pool schedules beyond fair share and caps (see the module docstring).
    ``backfill_grace_s``: how long a lease that backfill granted out of turn may take to stop
    when a request it passed needs its room (default 0: it gives the room back at once).
    ``quota_release``: when a lease being taken back stops counting against the pool."""

    preemption: str = "never"
    preemption_grace_s: float = 30.0
    backfill: bool = True
    max_queued_runs: int | None = None
    backfill_grace_s: float = 0.0
    quota_release: str = "on-terminal"

    @property
    def releases_on_terminating(self) -> bool:
        """Whether a lease's room is free as soon as it is marked to stop."""
        return self.quota_release == "on-terminating"

    def to_json(self) -> dict[str, Any]:
        return {
            "preemption": self.preemption,
            "preemption_grace_s": self.preemption_grace_s,
            "backfill": self.backfill,
            "max_queued_runs": self.max_queued_runs,
            "backfill_grace_s": self.backfill_grace_s,
            "quota_release": self.quota_release,
        }

    @classmethod
    def of(cls, raw: dict[str, Any] | None) -> PoolPolicy:
        raw = raw or {}
        return cls(
            str(raw.get("preemption", "never")),
            float(raw.get("preemption_grace_s", 30.0)),
            bool(raw.get("backfill", True)),
            raw.get("max_queued_runs"),
            float(raw.get("backfill_grace_s", 0.0)),
            str(raw.get("quota_release", "on-terminal")),
        )


@dataclass(frozen=True)
class Pool:
    """A pool as admission sees it: amounts are absolute (bytes, cores, devices)."""

    name: str
    mode: str
    capacity: Amounts
    default_cap_fraction: float
    members: dict[str, Member] = field(default_factory=dict)
    policy: PoolPolicy = field(default_factory=PoolPolicy)

    def queue_limit(self, pipeline: str) -> int | None:
        """How many runs of ``pipeline`` may wait in this pool's queue (None: no limit)."""
        member = self.members.get(pipeline)
        if member is not None and member.max_queued_runs is not None:
            return member.max_queued_runs
        return self.policy.max_queued_runs

    def member(self, pipeline: str) -> Member:
        """The pipeline's terms here; a stranger in a shared pool borrows only, up to the
        default cap; a stranger in a dedicated pool is refused."""
        if pipeline in self.members:
            return self.members[pipeline]
        if self.mode == "dedicated":
            owner = next(iter(self.members), "?")
            raise QuotaError(
                f"pool {self.name!r} is dedicated to pipeline {owner!r}; {pipeline!r} cannot use it"
            )
        cap = {r: v * self.default_cap_fraction for r, v in self.capacity.items()}
        return Member(pipeline, {r: 0.0 for r in self.capacity}, cap)


def _portion(raw: Portion | None, capacity: Amounts, what: str, default: float) -> Amounts:
    if raw is None:
        raw = default
    if isinstance(raw, int | float):
        if not 0 <= raw <= 1:
            raise InvalidInput(f"{what}: a fraction must lie in [0, 1], got {raw}")
        return {r: v * float(raw) for r, v in capacity.items()}
    amounts = parse_amounts(raw, what=what)
    if unknown := set(amounts) - set(capacity):
        raise InvalidInput(f"{what}: the pool has no {', '.join(sorted(unknown))}")
    return {r: amounts.get(r, 0.0) for r in capacity}


def resolve(spec: PoolSpec, default_cap_fraction: float) -> Pool:
    """Turn a validated spec into absolute amounts, checking share ≤ cap ≤ capacity and that
    the guaranteed shares fit in the pool."""
    capacity = parse_amounts(spec.capacity, what=f"pool {spec.name}: capacity")
    if not capacity:
        raise InvalidInput(f"pool {spec.name}: capacity names no resource")
    fraction = spec.default_cap_fraction or default_cap_fraction
    members: dict[str, Member] = {}
    if spec.mode == "dedicated":
        assert spec.owner is not None
        members[spec.owner] = Member(spec.owner, dict(capacity), dict(capacity))
    for m in spec.members:
        if m.pipeline in members:
            raise InvalidInput(f"pool {spec.name}: pipeline {m.pipeline!r} is listed twice")
        what = f"pool {spec.name}: member {m.pipeline}"
        share = _portion(m.share, capacity, f"{what}: share", 0.0)
        cap = _portion(m.cap, capacity, f"{what}: cap", fraction)
        cap = {r: max(cap[r], share[r]) if m.cap is None else cap[r] for r in capacity}
        if excess := first_excess(share, cap):
            raise InvalidInput(f"{what}: share of {excess[0]} ({excess[1]:g}) exceeds its cap")
        members[m.pipeline] = Member(m.pipeline, share, cap, m.weight, m.max_queued_runs)
    shares: Amounts = {}
    for member in members.values():
        for r, v in member.share.items():
            shares[r] = shares.get(r, 0.0) + v
    if spec.mode == "shared" and (excess := first_excess(shares, capacity)):
        raise InvalidInput(
            f"pool {spec.name}: guaranteed shares of {excess[0]} add up to {excess[1]:g}, "
            f"more than the capacity {excess[2]:g}"
        )
    policy = PoolPolicy(
        spec.preemption,
        spec.preemption_grace_s,
        spec.backfill,
        spec.max_queued_runs,
        spec.backfill_grace_s,
        spec.quota_release,
    )
    return Pool(spec.name, spec.mode, capacity, fraction, members, policy)


def read_pool_file(path: Path, default_cap_fraction: float) -> list[Pool]:
    """Read and validate a pool YAML file; any problem is one :class:`ConfigError`."""
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {yaml_error_line(exc)}") from None
    if raw is None:
        raise ConfigError(
            f"{path} is empty; nothing was changed (a pools file lists `pools:`, "
            "as examples/pools.yaml does)"
        )
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path} holds a {type(raw).__name__}, not a mapping with `pools:`; nothing was changed"
        )
    try:
        parsed = PoolFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None
    names = [p.name for p in parsed.pools]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: a pool name appears twice")
    try:
        return [resolve(p, default_cap_fraction) for p in parsed.pools]
    except InvalidInput as exc:
        raise ConfigError(f"{path}: {exc}") from None


def apply_pools(
    store: Store, pools: list[Pool], clock: Clock = SYSTEM_CLOCK, *, actor: str = ""
) -> None:
    """Create or replace these pools (and their members) in one transaction. Held leases stay;
    a smaller capacity only delays new admissions. Each pool's new definition is audited
    (``pool.apply``) as ``actor``'s."""
    now = clock.time()
    with store.session(immediate=True) as s:
        for pool in pools:
            row = s.execute(
                select(QuotaPool).where(QuotaPool.name == pool.name).with_for_update()
            ).scalar_one_or_none()
            if row is None:
                row = QuotaPool(name=pool.name, generation=0)
                s.add(row)
            row.mode = pool.mode
            row.capacity = dict(pool.capacity)
            row.default_cap_fraction = pool.default_cap_fraction
            row.policy = pool.policy.to_json()
            row.updated_at = now
            row.generation = (row.generation or 0) + 1
            s.flush()
            s.execute(delete(QuotaMember).where(QuotaMember.pool == pool.name))
            for m in pool.members.values():
                s.add(
                    QuotaMember(
                        pool=pool.name,
                        pipeline=m.pipeline,
                        share=dict(m.share),
                        cap=dict(m.cap),
                        weight=m.weight,
                        max_queued_runs=m.max_queued_runs,
                    )
                )
            audit.record(
                s,
                actor=actor,
                action="pool.apply",
                subject=("pool", pool.name),
                details={
                    "mode": pool.mode,
                    "capacity": dict(pool.capacity),
                    "default_cap_fraction": pool.default_cap_fraction,
                    "generation": row.generation,
                    "policy": pool.policy.to_json(),
                    "members": {
                        m.pipeline: {"share": dict(m.share), "cap": dict(m.cap), "weight": m.weight}
                        for m in pool.members.values()
                    },
                },
                now=now,
            )


def pool_from_rows(row: QuotaPool, members: list[QuotaMember]) -> Pool:
    return Pool(
        row.name,
        row.mode,
        {r: float(v) for r, v in row.capacity.items()},
        row.default_cap_fraction,
        {
            m.pipeline: Member(
                m.pipeline,
                {r: float(v) for r, v in m.share.items()},
                {r: float(v) for r, v in m.cap.items()},
                m.weight,
                m.max_queued_runs,
            )
            for m in members
        },
        PoolPolicy.of(row.policy),
    )


_CACHE: dict[tuple[str, str, int, float], Pool] = {}
_CACHE_LOCK = threading.Lock()


def load_pool(session: Session, name: str, *, lock: bool = False) -> Pool:
    """Read a pool; with ``lock`` take its row lock (PostgreSQL ``FOR UPDATE``) first.

    The definition is cached per (database, pool, generation, updated_at): every
    :func:`apply_pools` bumps the generation, so a hit only saves reading the members."""
    query = select(QuotaPool).where(QuotaPool.name == name)
    row = session.execute(query.with_for_update() if lock else query).scalar_one_or_none()
    if row is None:
        known = session.scalars(select(QuotaPool.name))
        raise NotFound(
            "pool", name, "declare it with `shipyard quota apply pools.yaml`", candidates=known
        )
    key = (str(session.get_bind().engine.url), name, row.generation, row.updated_at)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
    if cached is not None:
        return cached
    members = list(session.scalars(select(QuotaMember).where(QuotaMember.pool == name)))
    pool = pool_from_rows(row, members)
    with _CACHE_LOCK:
        if len(_CACHE) > 256:
            _CACHE.clear()
        _CACHE[key] = pool
    return pool


def list_pools(store: Store) -> list[Pool]:
    with store.session() as s:
        names = list(s.scalars(select(QuotaPool.name).order_by(QuotaPool.name)))
        return [load_pool(s, n) for n in names]


def dominant_share(usage: Amounts, capacity: Amounts, weight: float = 1.0) -> float:
    """Dominant resource share (DRF): max over resources of usage_r / capacity_r, divided by
    the fair-share weight. Ghodsi et al., "Dominant Resource Fairness: Fair Allocation of
    Multiple Resource Types", NSDI 2011; Kueue's fair sharing divides by the weight likewise."""
    ratios = [usage.get(r, 0.0) / c for r, c in capacity.items() if c > EPSILON]
    return max(ratios, default=0.0) / weight


def check_feasible(pool: Pool, pipeline: str, resources: Amounts) -> None:
    """Raise :class:`~shipyard.errors.QuotaExceeded` if the request can never fit the pool."""
    if excess := first_excess(resources, pool.capacity):
        raise QuotaExceeded(pool.name, excess[0], excess[1], excess[2], "pool capacity")
    member = pool.member(pipeline)
    if excess := first_excess(resources, member.cap):
        raise QuotaExceeded(
            pool.name, excess[0], excess[1], excess[2], f"cap of pipeline {pipeline!r}"
        )


def pool_exists(store: Store, name: str) -> bool:
    with store.session() as s:
        return s.get(QuotaPool, name) is not None
