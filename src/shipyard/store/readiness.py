"""Readiness' table: the drills that were run, when, how long each signal took, and whether
they cleaned up after themselves (``shipyard readiness --drill``).

A drill's row is written when it ends, whatever the outcome, so "last drilled" is a fact the
readiness score can age (:mod:`shipyard.readiness.drills`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shipyard.store.base import Base, new_id


class ReadinessDrill(Base):
    """One drill: its kind, what it drilled, its outcome, the signals' timings and cleanup."""

    __tablename__ = "readiness_drills"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(30))  # drift | outage | rollback | quota
    subject: Mapped[str] = mapped_column(String(200))  # a pipeline, model or pool
    passed: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    signals: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Seconds from the drill's start to each signal (``alert firing``, ``delivered``…)."""
    cleanup: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """What the drill undid and the checks that nothing was left behind."""
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    actor: Mapped[str] = mapped_column(String(100), default="")
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_readiness_drills_kind", "kind", "subject", "ended_at"),)
