"""The tamper-evident audit: every decision that matters, append-only and hash-chained.

Every wing records through :func:`record`, inside the transaction of the change it records;
:func:`verify` walks the chain and names the first edited, deleted, reordered or inserted event;
:func:`list_events` reads it back. ``docs/audit.md`` lists the actions.
"""

from __future__ import annotations

from shipyard.audit.chain import (
    GENESIS,
    MODES,
    Mode,
    acting,
    current_acting,
    event_hash,
    record,
)
from shipyard.audit.events import Event, Page, list_events
from shipyard.audit.identity import role_bound, role_unbound, token_granted, token_revoked
from shipyard.audit.verify import Tampering, Verdict, verify

__all__ = [
    "GENESIS",
    "MODES",
    "Event",
    "Mode",
    "Page",
    "Tampering",
    "Verdict",
    "acting",
    "current_acting",
    "event_hash",
    "list_events",
    "record",
    "role_bound",
    "role_unbound",
    "token_granted",
    "token_revoked",
    "verify",
]
