"""Safe deployment's tables: policies, rollouts and their looks, approvals, which version was in
production when, validation gate results and diagnoses. (The live traffic split that a rollout
commands is serving's table: :class:`shipyard.store.serving.TrafficSplit`.)

Every decision is also an :class:`~shipyard.store.tables.AuditEvent`, written in the same
transaction as the state it changes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shipyard.store.base import Base, new_id


class DeployPolicyRecord(Base):
    """A model's deployment policy, as the YAML text a person wrote (validated on write)."""

    __tablename__ = "deploy_policies"
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[float] = mapped_column(Float)
    updated_by: Mapped[str] = mapped_column(String(100), default="")


class RolloutRecord(Base):
    """One deployment of one model version, and where it stands."""

    __tablename__ = "rollouts"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    model: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    stable_version: Mapped[int | None] = mapped_column(Integer)
    author: Mapped[str] = mapped_column(String(100), default="")
    state: Mapped[str] = mapped_column(String(30), index=True)
    paused_from: Mapped[str | None] = mapped_column(String(30))
    step_index: Mapped[int] = mapped_column(Integer, default=0)
    step_started_at: Mapped[float | None] = mapped_column(Float)
    looks: Mapped[int] = mapped_column(Integer, default=0)
    last_look_at: Mapped[float | None] = mapped_column(Float)
    policy: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    cohort: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    """Frozen when the rollout first moves traffic: the earlier rollouts whose canary users it
    keeps out and the share of users left eligible (:mod:`shipyard.serving.routing`)."""


class RolloutApproval(Base):
    """One person's approval of a rollout, to start it or to speed it up."""

    __tablename__ = "rollout_approvals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[str] = mapped_column(String(32), index=True)
    purpose: Mapped[str] = mapped_column(String(20))  # start | speedup
    actor: Mapped[str] = mapped_column(String(100))
    roles: Mapped[list[Any]] = mapped_column(default=list)
    ts: Mapped[float] = mapped_column(Float)
    used: Mapped[int] = mapped_column(Integer, default=0)  # 1 once a promotion consumed it


class RolloutVerdict(Base):
    """One look of canary analysis: the outcome and every metric's evidence."""

    __tablename__ = "rollout_verdicts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[str] = mapped_column(String(32))
    step_index: Mapped[int] = mapped_column(Integer)
    look: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(20))
    window_start: Mapped[float] = mapped_column(Float)
    window_end: Mapped[float] = mapped_column(Float)
    metrics: Mapped[list[Any]] = mapped_column(default=list)
    ts: Mapped[float] = mapped_column(Float)
    trace_ids: Mapped[list[Any] | None] = mapped_column(default=None)
    """The traces of the canary's failed and slowest requests a failing look saw (W3C ids)."""

    __table_args__ = (Index("ix_rollout_verdicts_rollout", "rollout_id", "step_index", "look"),)


class ProductionRecord(Base):
    """A span of time during which one version served a model's production traffic."""

    __tablename__ = "production_history"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    since: Mapped[float] = mapped_column(Float)
    until: Mapped[float | None] = mapped_column(Float)
    via: Mapped[str] = mapped_column(String(30))  # rollout | rollback | initial
    rollout_id: Mapped[str | None] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(100), default="")
    reason: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_production_history_model", "model", "since"),)


class GateResult(Base):
    """A validation gate's decision on a version, with the numbers it compared."""

    __tablename__ = "gate_results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    passed: Mapped[int] = mapped_column(Integer)
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ts: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(100), default="")

    __table_args__ = (Index("ix_gate_results_model_version", "model", "version"),)


class Diagnosis(Base):
    """Why a rollout failed: failed metrics, drifting inputs, example failing requests."""

    __tablename__ = "rollout_diagnoses"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[str] = mapped_column(String(32), index=True)
    model: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ts: Mapped[float] = mapped_column(Float)
