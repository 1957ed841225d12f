"""The alerting wing's tables: alert instances, notification groups, the outbox, silences,
the daemon's leader lease, the configuration it runs with and the scheduler's memory of cron
slots.

Every row here is a state change written before it takes effect, so a daemon killed at any
point resumes from the database (see ``shipyard.alerting.outbox``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shipyard.store.base import Base, new_id


class AlertRecord(Base):
    """One alert instance (a rule plus one label set): ``pending``, ``firing`` or ``resolved``."""

    __tablename__ = "alerts"
    fingerprint: Mapped[str] = mapped_column(String(16), primary_key=True)
    rule: Mapped[str] = mapped_column(String(200), index=True)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    annotations: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(20), index=True)
    value: Mapped[float | None] = mapped_column(Float)
    active_at: Mapped[float] = mapped_column(Float)
    fired_at: Mapped[float | None] = mapped_column(Float)
    last_true_at: Mapped[float] = mapped_column(Float)
    resolved_at: Mapped[float | None] = mapped_column(Float)

    # keyset pages of the alert list (api/ops/alerts.py)
    __table_args__ = (Index("ix_alerts_active_at_fingerprint", "active_at", "fingerprint"),)


class AlertGroupRecord(Base):
    """What one receiver's group was last told, so grouping timers survive a restart."""

    __tablename__ = "alert_groups"
    key: Mapped[str] = mapped_column(String(500), primary_key=True)
    receiver: Mapped[str] = mapped_column(String(200))
    group_labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    first_seen_at: Mapped[float] = mapped_column(Float)
    last_sent_at: Mapped[float | None] = mapped_column(Float)
    last_firing_digest: Mapped[str | None] = mapped_column(String(64))


class NotificationRecord(Base):
    """The outbox: one delivery of one group's state to one receiver."""

    __tablename__ = "notifications"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    receiver: Mapped[str] = mapped_column(String(200))
    group_key: Mapped[str] = mapped_column(String(500))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    claimed_until: Mapped[float | None] = mapped_column(Float)
    claimed_by: Mapped[str | None] = mapped_column(String(40))
    delivered_at: Mapped[float | None] = mapped_column(Float)
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_notifications_due", "status", "next_attempt_at"),)


class SilenceRecord(Base):
    """Mutes the alerts its matchers select between ``starts_at`` and ``ends_at``."""

    __tablename__ = "silences"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    matchers: Mapped[list[Any]] = mapped_column(default=list)
    starts_at: Mapped[float] = mapped_column(Float)
    ends_at: Mapped[float] = mapped_column(Float, index=True)
    created_by: Mapped[str] = mapped_column(String(100))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)

    # keyset pages of the silence list (api/ops/alerts.py)
    __table_args__ = (Index("ix_silences_created_at_id", "created_at", "id"),)


class LeaderLease(Base):
    """Who may act: one row per role, held by one daemon until ``expires_at``."""

    __tablename__ = "leader_leases"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[float] = mapped_column(Float)


class DaemonConfigRecord(Base):
    """The configuration the leading daemon loaded (written when it takes the lease), so that
    commands show what the running daemon uses."""

    __tablename__ = "daemon_configs"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)  # alerting
    holder: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(Text)  # the file's path, or "defaults"
    text: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    recorded_at: Mapped[float] = mapped_column(Float)


class ScheduleState(Base):
    """The last cron slot the scheduler acted on, per pipeline."""

    __tablename__ = "schedule_state"
    pipeline: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_slot_at: Mapped[float] = mapped_column(Float)
    last_run_id: Mapped[str | None] = mapped_column(String(32))
    last_outcome: Mapped[str] = mapped_column(String(200), default="")
