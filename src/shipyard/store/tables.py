"""The foundation's tables: pipelines, runs, step runs, artifacts and lineage, metric points,
findings and the audit log. Other wings define theirs in their own module of this package."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shipyard.store.base import Base, new_id


class PipelineRecord(Base):
    """A pipeline Shipyard has seen (registered on its first run)."""

    __tablename__ = "pipelines"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    file: Mapped[str] = mapped_column(Text)
    schedule: Mapped[str | None] = mapped_column(String(100))
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[float] = mapped_column(Float)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    pipeline: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    file: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    executor: Mapped[str] = mapped_column(String(20), default="local")
    created_by: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[float] = mapped_column(Float, index=True)
    started_at: Mapped[float | None] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    exit_reason: Mapped[str | None] = mapped_column(Text)
    # who runs it: a runner that died leaves these behind (pipelines/reconcile.py)
    runner_host: Mapped[str | None] = mapped_column(String(200))
    runner_pid: Mapped[int | None] = mapped_column(Integer)
    runner_started_at: Mapped[float | None] = mapped_column(Float)
    heartbeat_at: Mapped[float | None] = mapped_column(Float)
    # the pipeline's monitor settings when the run was created (shipyard.monitor_config JSON)
    monitors: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)

    __table_args__ = (
        # keyset pages of the run list, all runs or one pipeline's (api/ops/runs.py)
        Index("ix_runs_created_at_id", "created_at", "id"),
        Index("ix_runs_pipeline_created_at", "pipeline", "created_at"),
    )


class StepRun(Base):
    __tablename__ = "step_runs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    started_at: Mapped[float | None] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    exit_reason: Mapped[str | None] = mapped_column(Text)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    pid: Mapped[int | None] = mapped_column(Integer)
    process_started_at: Mapped[float | None] = mapped_column(Float)  # tells pid reuse apart
    peak_rss_bytes: Mapped[int | None] = mapped_column(BigInteger)
    cpu_seconds: Mapped[float | None] = mapped_column(Float)
    input_rows: Mapped[int | None] = mapped_column(BigInteger)
    input_bytes: Mapped[int | None] = mapped_column(BigInteger)
    resources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    log_path: Mapped[str | None] = mapped_column(Text)
    enforcement: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ArtifactRecord(Base):
    """A content-addressed artifact: its sha256 is its name."""

    __tablename__ = "artifacts"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    uri: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(Integer)
    media_type: Mapped[str] = mapped_column(String(50))
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[float] = mapped_column(Float)


class Lineage(Base):
    """One edge of lineage: a step run produced or consumed an artifact."""

    __tablename__ = "lineage"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    digest: Mapped[str] = mapped_column(ForeignKey("artifacts.digest"), index=True)
    step_run_id: Mapped[str] = mapped_column(
        ForeignKey("step_runs.id", ondelete="CASCADE"), index=True
    )
    direction: Mapped[str] = mapped_column(String(10))  # "produced" | "consumed"
    name: Mapped[str] = mapped_column(String(200))


def labels_key(labels: Mapping[str, Any]) -> str:
    """The canonical key of a label set, ``k=v`` pairs sorted by key: what every writer stores
    in ``MetricPoint.labels_key`` and what rules group series by."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


class MetricPoint(Base):
    """(name, labels, timestamp, value): the one time-series format of Shipyard."""

    __tablename__ = "metric_points"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    labels_key: Mapped[str] = mapped_column(Text, default="")
    ts: Mapped[float] = mapped_column(Float)
    value: Mapped[float] = mapped_column(Float)

    @classmethod
    def of(cls, name: str, labels: Mapping[str, Any], ts: float, value: float) -> MetricPoint:
        """A point with its ``labels_key`` derived from its labels (the only way to build one)."""
        return cls(
            name=name, labels=dict(labels), labels_key=labels_key(labels), ts=ts, value=float(value)
        )

    __table_args__ = (
        Index("ix_metric_points_name_ts", "name", "ts"),
        Index("ix_metric_points_series", "name", "labels_key", "ts"),
    )


class Finding(Base):
    """A monitor's verdict with its evidence."""

    __tablename__ = "findings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    monitor: Mapped[str] = mapped_column(String(100), index=True)
    subject: Mapped[str] = mapped_column(String(200), index=True)
    run_id: Mapped[str | None] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(20))  # ok | warning | alert | error
    summary: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ts: Mapped[float] = mapped_column(Float, index=True)


class AuditEvent(Base):
    """An immutable record of a decision: who did what to which thing, when, and why.

    One link of the audit chain (:mod:`shipyard.audit`): ``hash`` covers the event's fields and
    ``prev_hash``, the hash of event ``seq - 1``. Written only by :func:`shipyard.audit.record`;
    a row without a ``seq`` was inserted some other way, which ``shipyard audit verify`` reports.
    A trigger refuses UPDATE and DELETE (migration 0013).
    """

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seq: Mapped[int | None] = mapped_column(Integer, index=True, unique=True)
    ts: Mapped[float] = mapped_column(Float, index=True)
    actor: Mapped[str] = mapped_column(String(100))
    mode: Mapped[str | None] = mapped_column(String(20))  # embedded | server
    action: Mapped[str] = mapped_column(String(100))
    subject_kind: Mapped[str] = mapped_column(String(50))
    subject_id: Mapped[str] = mapped_column(String(200), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64), index=True, unique=True)


class AuditChainHead(Base):
    """The audit chain's last event (one row, id 1): appends lock it, so that two writers never
    number an event alike, and ``audit verify`` notices events deleted from the chain's end."""

    __tablename__ = "audit_chain"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
