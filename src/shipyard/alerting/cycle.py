"""One evaluation cycle: rules → alert states → groups → outbox rows, in one transaction.

The series are read first, outside the write transaction (so writers such as serving flushes
are not held up by a long evaluation). Because the state changes and the notifications they
cause commit together, a crash either
loses both (the next cycle decides again) or keeps both (the outbox delivers them).
"""

from __future__ import annotations

from dataclasses import dataclass

from shipyard.alerting.config import AlertingConfig
from shipyard.alerting.grouping import dispatch
from shipyard.alerting.state import Transition, apply_rules, evaluate_all
from shipyard.store import Store


@dataclass(frozen=True)
class CycleResult:
    transitions: list[Transition]
    notifications: int


def evaluate(store: Store, config: AlertingConfig, now: float) -> CycleResult:
    """Evaluate every rule at ``now``, move alerts, and queue the notifications that are due."""
    with store.session() as session:  # read the series without holding the write lock
        hits = evaluate_all(session, config.rules, now)
    with store.session(immediate=True) as session:
        transitions = apply_rules(session, config.rules, now, hits)
        session.flush()
        queued = dispatch(
            session, config.route, config.inhibit_rules, now, external_url=config.external_url
        )
    return CycleResult(transitions, len(queued))
