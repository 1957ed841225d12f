"""The alert path a drill proves: a rule evaluation cycle and a delivery pass, called directly
until the drill's alert fires and its notification is delivered (or a deadline passes), then
until it resolves and the receiver is told; and, when it does not arrive, at which stage it
stopped and why.

These are the control loop's own functions (:func:`shipyard.alerting.evaluate`,
:func:`shipyard.alerting.deliver_due`); a daemon running meanwhile does the same work on the
same rows, and the outbox's claims keep a notification from being sent twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from shipyard.alerting.config import AlertingConfig
from shipyard.alerting.cycle import evaluate
from shipyard.alerting.grouping import routes_for
from shipyard.alerting.outbox import deliver_due
from shipyard.alerting.rules import Rule
from shipyard.clock import Clock
from shipyard.errors import ShipyardError
from shipyard.store import Store
from shipyard.store.alerting import AlertRecord, NotificationRecord
from shipyard.store.base import new_id

POLL_S = 0.2


class DrillFailed(ShipyardError):
    """A drill could not prove what it drills; the message says at which stage and why."""


@dataclass
class DrillRun:
    """One drill in progress: its id, its clock, and what it saw when."""

    kind: str
    subject: str
    started_at: float
    started: float
    """The monotonic clock at the start."""
    id: str = field(default_factory=new_id)
    signals: dict[str, float] = field(default_factory=dict)
    cleanup: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)

    def mark(self, signal: str, clock: Clock) -> None:
        """Record when ``signal`` was first seen, in seconds from the drill's start."""
        self.signals.setdefault(signal, round(clock.monotonic() - self.started, 3))


class AlertPath:
    """Drives the alerting wing's evaluation and delivery for a drill, within ``timeout_s``."""

    def __init__(self, store: Store, config: AlertingConfig, clock: Clock, timeout_s: float):
        self.store = store
        self.config = config
        self.clock = clock
        self.timeout_s = timeout_s

    def cycle(self) -> None:
        evaluate(self.store, self.config, self.clock.time())
        deliver_due(self.store, self.config.receivers, self.clock)

    def await_alert(
        self, run: DrillRun, mine: Callable[[AlertRecord], bool], rules: list[Rule]
    ) -> None:
        """Evaluate and deliver until an alert ``mine`` selects is firing and delivered;
        :class:`DrillFailed` names the stage it stopped at."""
        deadline = run.started + self.timeout_s
        fingerprints: set[str] = set()
        delivered_to: list[str] = []
        while True:
            self.cycle()
            with self.store.session(readonly=True) as s:
                alerts = [a for a in s.scalars(select(AlertRecord)) if mine(a)]
                fingerprints |= {a.fingerprint for a in alerts}
                if alerts:
                    run.mark("alert pending", self.clock)
                firing = [a for a in alerts if a.state == "firing"]
                if firing:
                    run.mark("alert firing", self.clock)
                    run.detail["alerts"] = sorted({a.rule for a in firing})
                    run.detail["receivers"] = sorted(
                        {
                            r.receiver
                            for a in firing
                            for r in routes_for(self.config.route, a.labels)
                        }
                    )
                    notes = self._notifications(s, fingerprints, run.started_at)
                    if notes:
                        run.mark("notification queued", self.clock)
                    delivered_to = [n.receiver for n in notes if n.status == "delivered"]
                    failed = [n for n in notes if n.status == "failed"]
                    if failed:
                        raise DrillFailed(
                            f"the alert fired but its notification to {failed[0].receiver} "
                            f"failed for good: {failed[0].last_error}"
                        )
            if delivered_to:
                run.mark("delivered", self.clock)
                run.detail["delivered_to"] = sorted(set(delivered_to))
                return
            if self.clock.monotonic() >= deadline:
                raise DrillFailed(self._stuck(run, rules, fingerprints))
            self.clock.sleep(POLL_S)

    def _notifications(
        self, s: Any, fingerprints: set[str], since: float
    ) -> list[NotificationRecord]:
        rows = s.scalars(
            select(NotificationRecord).where(NotificationRecord.created_at >= since)
        ).all()
        return [
            n
            for n in rows
            if any(
                a.get("fingerprint") in fingerprints and a.get("status") == "firing"
                for a in (n.payload or {}).get("alerts", [])
            )
        ]

    def _stuck(self, run: DrillRun, rules: list[Rule], fingerprints: set[str]) -> str:
        names = ", ".join(sorted({r.name for r in rules}))
        waited = f"within {self.timeout_s:g} s"
        if "alert pending" not in run.signals:
            return f"no alert of {names} was raised {waited}"
        if "alert firing" not in run.signals:
            longest = max((r.for_s for r in rules), default=0.0)
            return f"the alert stayed pending {waited} ({names}: for {longest:g} s)"
        with self.store.session(readonly=True) as s:
            pending = [
                n
                for n in s.scalars(
                    select(NotificationRecord).where(NotificationRecord.status == "pending")
                )
                if any(
                    a.get("fingerprint") in fingerprints
                    for a in (n.payload or {}).get("alerts", [])
                )
            ]
        if pending:
            n = pending[0]
            why = f": {n.last_error}" if n.last_error else ""
            return (
                f"the alert fired but did not reach {n.receiver} {waited} "
                f"({n.attempts} attempts{why})"
            )
        receivers = ", ".join(run.detail.get("receivers", [])) or "its receiver"
        return (
            f"the alert fired but no notification to {receivers} was sent {waited} (the route's "
            "group_wait/group_interval hold it, or a silence or inhibition mutes it)"
        )

    def resolve(self, run: DrillRun, mine: Callable[[AlertRecord], bool]) -> None:
        """Evaluate until the drill's alerts (those ``mine`` selects) are no longer pending or
        firing, and deliver their resolution while the deadline allows; record what is left
        in ``run.cleanup`` (the caller decides whether that fails the drill)."""
        deadline = self.clock.monotonic() + max(self.timeout_s / 2, 5.0)
        while True:
            self.clock.sleep(POLL_S)  # a resolution is news only after the firing was told
            self.cycle()
            with self.store.session(readonly=True) as s:
                drilled = [a for a in s.scalars(select(AlertRecord)) if mine(a)]
                fingerprints = {a.fingerprint for a in drilled}
                left = [a.fingerprint for a in drilled if a.state in ("pending", "firing")]
                told = [
                    n
                    for n in s.scalars(
                        select(NotificationRecord).where(
                            NotificationRecord.created_at >= run.started_at
                        )
                    )
                    if any(
                        a.get("fingerprint") in fingerprints and a.get("status") == "resolved"
                        for a in (n.payload or {}).get("alerts", [])
                    )
                ]
            resolved_delivered = any(n.status == "delivered" for n in told)
            failing = any(n.status != "delivered" and n.last_error for n in told)
            was_told = "delivered" in run.signals
            if not left:
                run.mark("alert resolved", self.clock)
                if resolved_delivered or not was_told or failing:
                    break  # told, or nobody heard it fire, or its receiver is failing
            if self.clock.monotonic() >= deadline:
                break
        if resolved_delivered:
            run.mark("resolution delivered", self.clock)
        run.cleanup["alerts_left_firing"] = len(left)
        run.cleanup["resolution_delivered"] = resolved_delivered

    def left_behind(self, run: DrillRun) -> None:
        """Fail a drill that proved its signal but could not clean up after itself."""
        if run.cleanup.get("alerts_left_firing"):
            raise DrillFailed(
                f"{run.cleanup['alerts_left_firing']} drill alert(s) still firing after cleanup"
            )
