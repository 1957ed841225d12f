"""Monitoring's tables: the profiles steps publish, each pipeline's monitor settings, and which
finished runs the run monitors have judged."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from shipyard.store.base import Base


class MonitorProfile(Base):
    """A data set a step published with ``observe``: its profile (an artifact) and schema."""

    __tablename__ = "monitor_profiles"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pipeline: Mapped[str] = mapped_column(String(200))
    dataset: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))  # "reference" | "current"
    run_id: Mapped[str | None] = mapped_column(String(32), index=True)
    step: Mapped[str | None] = mapped_column(String(200))
    label: Mapped[str | None] = mapped_column(String(200))
    rows: Mapped[int] = mapped_column(Integer)
    profile_digest: Mapped[str] = mapped_column(String(64))
    schema: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ts: Mapped[float] = mapped_column(Float)
    # a reference's sample of rows and multivariate fit (an artifact; monitoring/multivariate.py)
    sample_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (Index("ix_monitor_profiles_lookup", "pipeline", "dataset", "role", "ts"),)


class MonitorSettings(Base):
    """A pipeline's monitors as its definition last set them (read where the file is not)."""

    __tablename__ = "monitor_settings"
    pipeline: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    monitors: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[float] = mapped_column(Float)


class MonitoredRun(Base):
    """A finished run the run monitors have judged: written with their findings, so a run is
    judged once whether the runner or the daemon gets to it first."""

    __tablename__ = "monitored_runs"
    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    ts: Mapped[float] = mapped_column(Float)
