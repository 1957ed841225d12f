"""The tamper-evident audit: every decision that matters, append-only and hash-chained.

Every wing records through :func:`record`, inside the transaction of the change it records;
:func:`verify` walks the chain and names the first edited, deleted, reordered or inserted event;
:func:`list_events` reads it back. ``docs/audit.md`` lists the actions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shipyard.lazy import lazy_exports

if TYPE_CHECKING:
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

# Each name is imported from its module on first use: the embedded client enters ``acting`` for
# every command, and a listing has no use for the verifier or the event reader.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "chain": ("GENESIS", "MODES", "Mode", "acting", "current_acting", "event_hash", "record"),
        "events": ("Event", "Page", "list_events"),
        "identity": ("role_bound", "role_unbound", "token_granted", "token_revoked"),
        "verify": ("Tampering", "Verdict", "verify"),
    },
)

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
