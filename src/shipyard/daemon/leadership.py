"""Who may act: the leader lease, renewed apart from the work, and what commands read of it.

One row of ``leader_leases`` per role, taken or renewed in a transaction with a row lock.
:class:`Leadership` keeps what this daemon knows of its own lease: it holds it until
``expires_at`` as written at its last renewal. Another daemon may take the lease only once
that time has passed, so a holder whose outbound calls end within ``remaining_s()`` (fencing)
has finished each call before anyone else can start one.

Commands that depend on the control loop ask :func:`no_daemon_note`; the configuration the
leader loaded is recorded by :func:`record_config` and read back by :func:`recorded_config`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from shipyard.clock import Clock
from shipyard.errors import ShipyardError
from shipyard.store import Store
from shipyard.store.alerting import DaemonConfigRecord, LeaderLease

log = logging.getLogger("shipyard.daemon")

LEADER = "daemon"
FENCE_MARGIN_S = 0.5
"""Kept between the end of an outbound call and the lease's expiry (clock steps, slow commits)."""
NO_DAEMON = "no daemon is running: rollouts advance only while `shipyard daemon` runs"


def acquire_leadership(
    store: Store, holder: str, ttl_s: float, now: float, name: str = LEADER
) -> bool:
    """Take or renew the lease ``name`` for ``holder``; False while another holds it."""
    try:
        with store.session(immediate=True) as session:
            row = session.scalars(
                select(LeaderLease).where(LeaderLease.name == name).with_for_update()
            ).first()
            if row is None:
                session.add(LeaderLease(name=name, holder=holder, expires_at=now + ttl_s))
                return True
            if row.holder != holder and row.expires_at > now:
                return False
            row.holder = holder
            row.expires_at = now + ttl_s
            return True
    except IntegrityError:  # another daemon inserted the row first
        return False


def release_leadership(store: Store, holder: str, now: float, name: str = LEADER) -> None:
    with store.session(immediate=True) as session:
        row = session.get(LeaderLease, name, with_for_update=True)
        if row is not None and row.holder == holder:
            row.expires_at = now


@dataclass
class Leadership:
    """This daemon's lease: renewed by :meth:`renew` (a thread of its own in the daemon),
    consulted by the work through :meth:`remaining_s`."""

    store: Store
    holder: str
    ttl_s: float
    clock: Clock
    name: str = LEADER
    expires_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def renew(self) -> bool:
        """Take or renew the lease; True while this daemon holds it.

        A renewal that fails on the database keeps what was known: the lease still runs out
        at its old expiry, and the work stops then."""
        now = self.clock.time()
        try:
            held = acquire_leadership(self.store, self.holder, self.ttl_s, now, self.name)
        except ShipyardError as exc:
            log.warning("cannot renew the leader lease: %s", exc)
            return self.held
        with self._lock:
            self.expires_at = now + self.ttl_s if held else 0.0
        return held

    def remaining_s(self) -> float:
        """How long the lease is surely still this daemon's (0 when it is not)."""
        with self._lock:
            expires_at = self.expires_at
        return max(expires_at - self.clock.time() - FENCE_MARGIN_S, 0.0)

    @property
    def held(self) -> bool:
        return self.remaining_s() > 0

    def release(self) -> None:
        with self._lock:
            self.expires_at = 0.0
        release_leadership(self.store, self.holder, self.clock.time(), self.name)


# -- what commands read -----------------------------------------------------------------------


@dataclass(frozen=True)
class LeaderView:
    holder: str
    expires_at: float


def current_leader(store: Store, now: float, name: str = LEADER) -> LeaderView | None:
    """The daemon holding the lease now, if any."""
    with store.session() as session:
        row = session.get(LeaderLease, name)
        if row is None or row.expires_at <= now:
            return None
        return LeaderView(row.holder, row.expires_at)


def no_daemon_note(store: Store, now: float) -> str | None:
    """The line a command that depends on the control loop prints when no daemon leads."""
    return NO_DAEMON if current_leader(store, now) is None else None


@dataclass(frozen=True)
class RecordedConfig:
    """A configuration a daemon loaded: ``source`` is its file ("defaults" when none)."""

    name: str
    holder: str
    source: str
    text: str | None
    sha256: str | None
    recorded_at: float


def record_config(
    store: Store, name: str, holder: str, source: str, text: str | None, now: float
) -> None:
    """Record the configuration ``name`` (e.g. ``alerting``) that ``holder`` runs with."""
    digest = hashlib.sha256(text.encode()).hexdigest() if text is not None else None
    with store.session(immediate=True) as session:
        row = session.get(DaemonConfigRecord, name, with_for_update=True)
        if row is None:
            row = DaemonConfigRecord(name=name)
            session.add(row)
        row.holder, row.source, row.text, row.sha256 = holder, source, text, digest
        row.recorded_at = now


def recorded_config(store: Store, name: str) -> RecordedConfig | None:
    with store.session() as session:
        row = session.get(DaemonConfigRecord, name)
        if row is None:
            return None
        return RecordedConfig(
            row.name, row.holder, row.source, row.text, row.sha256, row.recorded_at
        )
