"""Quota's tables: pools, their members, leases (held and waiting) and the lease event log."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from shipyard.store.base import Base, new_id


class QuotaPool(Base):
    """A pool of capacity. Its row is the lock every admission into the pool takes."""

    __tablename__ = "quota_pools"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    mode: Mapped[str] = mapped_column(String(20))  # "shared" | "dedicated"
    capacity: Mapped[dict[str, Any]] = mapped_column(default=dict)  # resource -> amount
    default_cap_fraction: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    last_fence: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # preemption, grace_s, backfill, max_queued_runs (quota/pools.py: PoolPolicy)
    policy: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")


class QuotaMember(Base):
    """A pipeline's guaranteed share, cap and fair-share weight in a pool (absolute amounts)."""

    __tablename__ = "quota_members"
    pool: Mapped[str] = mapped_column(
        ForeignKey("quota_pools.name", ondelete="CASCADE"), primary_key=True
    )
    pipeline: Mapped[str] = mapped_column(String(200), primary_key=True)
    share: Mapped[dict[str, Any]] = mapped_column(default=dict)
    cap: Mapped[dict[str, Any]] = mapped_column(default=dict)
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    max_queued_runs: Mapped[int | None] = mapped_column(Integer)


class QuotaLease(Base):
    """One step's request in a pool: ``waiting`` in the queue, then ``held``, then ended
    (``released``, ``expired`` or ``cancelled``)."""

    __tablename__ = "quota_leases"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    pool: Mapped[str] = mapped_column(ForeignKey("quota_pools.name", ondelete="CASCADE"))
    pipeline: Mapped[str] = mapped_column(String(200))
    run_id: Mapped[str] = mapped_column(String(32), default="")
    step: Mapped[str] = mapped_column(String(200), default="")
    step_run_id: Mapped[str] = mapped_column(String(32), default="")
    resources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    used: Mapped[dict[str, Any]] = mapped_column(default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(20))
    # fencing token: the pool's grant counter when this lease was granted (admission.py)
    fence: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    holder_pid: Mapped[int | None] = mapped_column(Integer)
    requested_at: Mapped[float] = mapped_column(Float)
    granted_at: Mapped[float | None] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(Text)
    # backfill and preemption (admission.py): how long the holder is expected to take, the start
    # promised to a blocked head, when a lease being taken back must have stopped
    expected_s: Mapped[float | None] = mapped_column(Float)
    start_promised_at: Mapped[float | None] = mapped_column(Float)
    preempt_at: Mapped[float | None] = mapped_column(Float)
    preemptible: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # granted by backfill ahead of a request before it in order: it yields to that request
    # (queue.py), until its own place in strict order comes and it is promoted
    out_of_turn: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # strict order's account of the lease (queue.py): when its place came, when it would end
    in_turn_since: Mapped[float | None] = mapped_column(Float)
    in_turn_until: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        Index("ix_quota_leases_pool_status", "pool", "status"),
        Index("ix_quota_leases_run_id", "run_id"),
        # keyset pages of the lease list (api/ops/quota.py)
        Index("ix_quota_leases_requested_at_id", "requested_at", "id"),
        # the ended leases strict order still counts (queue.py)
        Index("ix_quota_leases_pool_in_turn_until", "pool", "in_turn_until"),
        Index("ix_quota_leases_pool_out_of_turn", "pool", "out_of_turn"),
    )


class QuotaEvent(Base):
    """Every grant and end of a lease, with the pool's resulting held total (for audit and the
    never-over-capacity check)."""

    __tablename__ = "quota_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pool: Mapped[str] = mapped_column(String(100))
    lease_id: Mapped[str] = mapped_column(String(32))
    # granted | preempting | released | expired | cancelled | preempted
    kind: Mapped[str] = mapped_column(String(20))
    ts: Mapped[float] = mapped_column(Float)
    held_total: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (Index("ix_quota_events_pool_id", "pool", "id"),)


class QuotaReservation(Base):
    """A standing reservation (e.g. a model's serving replicas) that ``quota plan`` counts."""

    __tablename__ = "quota_reservations"
    pool: Mapped[str] = mapped_column(
        ForeignKey("quota_pools.name", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    resources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    basis: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[float] = mapped_column(Float)
