"""The model server's tables: the live traffic split, flushed telemetry windows, logged
predictions, late labels, and the running server instances (where each answers, what it serves,
the lease it holds).

A window row is keyed by (worker, model, version, window start): a worker that flushes the same
window twice (a retry after a lost reply) writes it once; a worker killed mid-window loses only
that window, and a half-written window cannot exist because each flush is one transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shipyard.store.base import Base, new_id


class TrafficSplit(Base):
    """Which versions of a model are live and with what share of traffic (percent).

    Written only through :func:`shipyard.serving.split.set_split` (deploy commands it inside the
    transaction of the rollout decision that calls for it)."""

    __tablename__ = "traffic_splits"
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    weight_pct: Mapped[float] = mapped_column(Float)
    role: Mapped[str] = mapped_column(String(20))  # stable | canary | shadow
    rollout_id: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[float] = mapped_column(Float)
    cohort: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    """On the canary's row: how the server draws the canary's users
    (:class:`shipyard.serving.routing.Cohort`)."""


class ServingWindow(Base):
    """What one worker saw for one model version during one window."""

    __tablename__ = "serving_windows"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(100))
    window_start: Mapped[float] = mapped_column(Float)
    window_end: Mapped[float] = mapped_column(Float)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    data_errors: Mapped[int] = mapped_column(Integer, default=0)
    latency_s: Mapped[dict[str, Any]] = mapped_column(default=dict)
    input_profile: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    prediction_profile: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (
        UniqueConstraint("worker", "model", "version", "window_start", name="uq_serving_windows"),
        Index("ix_serving_windows_model_end", "model", "window_end"),
    )


class TracedRequest(Base):
    """A request whose trace is kept: every refused or failed one, and every one whose caller
    sent a W3C ``traceparent`` (up to a cap per window). Written with its window, in the same
    transaction; (worker, model, version, window_start) names that window."""

    __tablename__ = "serving_traces"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trace_id: Mapped[str] = mapped_column(String(32))
    span_id: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[str | None] = mapped_column(String(16))
    request_id: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(100))
    window_start: Mapped[float] = mapped_column(Float)
    ts: Mapped[float] = mapped_column(Float)
    status: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        Index("ix_serving_traces_trace", "trace_id"),
        Index("ix_serving_traces_model_ts", "model", "version", "ts"),
    )


class PredictionRecord(Base):
    """A served prediction, kept so that late labels can be joined to it by request id."""

    __tablename__ = "serving_predictions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    ts: Mapped[float] = mapped_column(Float)
    prediction: Mapped[list[Any]] = mapped_column(default=list)
    confidence: Mapped[list[Any] | None] = mapped_column(default=None)

    __table_args__ = (
        Index("ix_serving_predictions_request", "model", "request_id"),
        Index("ix_serving_predictions_ts", "model", "ts"),
    )


class FeedbackRecord(Base):
    """Ground truth that arrived after the prediction (``POST /v2/models/{m}/feedback``)."""

    __tablename__ = "serving_feedback"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(200))
    labels: Mapped[list[Any]] = mapped_column(default=list)
    ts: Mapped[float] = mapped_column(Float)
    note: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_serving_feedback_request", "model", "request_id"),)


class ServingInstance(Base):
    """A running ``shipyard serve`` process: where it answers, what it serves, and the quota
    lease it holds (if it was started with ``--pool``).

    Written by the server's main process when it starts, its ``heartbeat_at`` renewed with the
    lease, ``stopped_at`` set on a clean shutdown. An instance whose heartbeat is older than
    its ``ttl_s`` is gone (SIGKILL, a lost machine): the control loop no longer probes it, and
    its lease expires the same way. ``machine`` (the host name the process runs on) lets a
    process on the same machine see that ``pid`` is gone; ``stop_reason`` says who closed the
    record and why when it was not a clean shutdown.
    """

    __tablename__ = "serving_instances"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    url: Mapped[str] = mapped_column(String(300))
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    workers: Mapped[int] = mapped_column(Integer, default=1)
    models: Mapped[list[Any]] = mapped_column(default=list)
    pool: Mapped[str | None] = mapped_column(String(100), default=None)
    lease_id: Mapped[str | None] = mapped_column(String(32), default=None)
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)
    ttl_s: Mapped[float] = mapped_column(Float)
    stopped_at: Mapped[float | None] = mapped_column(Float, default=None)
    machine: Mapped[str | None] = mapped_column(String(200), default=None)
    stop_reason: Mapped[str | None] = mapped_column(String(200), default=None)

    __table_args__ = (Index("ix_serving_instances_heartbeat", "stopped_at", "heartbeat_at"),)
