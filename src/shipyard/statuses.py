"""The statuses that Shipyard's rows carry, each vocabulary listed once.

The store keeps them as plain strings (``String`` columns), and a :class:`~enum.StrEnum` member
*is* its string: ``RunStatus.FAILED == "failed"``, ``f"{RunStatus.FAILED}"`` is ``failed`` and
JSON writes it as ``"failed"``. Services, the store's queries and the CLI compare with these
members instead of spelling the strings again, so a status that does not exist (a ``queued``
run) cannot be written or waited for.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """A pipeline run (``runs.status``): running until its runner ends it."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    """One step of a run (``step_runs.status``)."""

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"
    """Its lease was taken back (quota preemption) and no retry was left: not a failure of
    the step's code."""


RUN_FINAL: tuple[RunStatus, ...] = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
"""A run in one of these has ended and never moves again."""
STEP_FINAL: tuple[StepStatus, ...] = (
    StepStatus.SUCCEEDED,
    StepStatus.FAILED,
    StepStatus.CANCELLED,
    StepStatus.PREEMPTED,
)
"""A step in one of these has ended (a run's three words, and ``preempted``)."""
STEP_ACTIVE: tuple[StepStatus, ...] = (StepStatus.RUNNING, StepStatus.RETRYING)
"""A step in one of these has (or is about to have) a process of its own."""


class LeaseStatus(StrEnum):
    """A quota lease (``quota_leases.status``)."""

    WAITING = "waiting"
    HELD = "held"
    RELEASED = "released"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"
    """Taken back from a borrower for a member's guaranteed share (or a higher priority)."""


LEASE_ACTIVE: tuple[LeaseStatus, ...] = (LeaseStatus.HELD, LeaseStatus.WAITING)
"""A lease that holds capacity or waits for it; every other status is final."""


class RolloutState(StrEnum):
    """A rollout (``rollouts.state``): approvals → staging → canary steps → production."""

    WAITING = "waiting_for_approvals"
    STAGING = "staging"
    CANARY = "canary"
    PRODUCTION = "production"
    PAUSED = "paused"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


ROLLOUT_ACTIVE: tuple[RolloutState, ...] = (
    RolloutState.WAITING,
    RolloutState.STAGING,
    RolloutState.CANARY,
    RolloutState.PAUSED,
)
ROLLOUT_MOVING: tuple[RolloutState, ...] = (
    RolloutState.WAITING,
    RolloutState.STAGING,
    RolloutState.CANARY,
)
"""Active and not paused: the control loop moves these on (and a person may pause them)."""
ROLLOUT_FINAL: tuple[RolloutState, ...] = (
    RolloutState.PRODUCTION,
    RolloutState.ROLLED_BACK,
    RolloutState.FAILED,
)


class AlertState(StrEnum):
    """An alert instance (``alerts.state``), Prometheus' state machine plus ``resolved``."""

    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class NotificationStatus(StrEnum):
    """One delivery in the outbox (``notifications.status``)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class CheckStatus(StrEnum):
    """A monitor's verdict (:class:`shipyard.checks.Check`, ``findings.status``), mildest
    first: comparing by :attr:`severity` finds the worst of several."""

    OK = "ok"
    WARNING = "warning"
    ALERT = "alert"
    ERROR = "error"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {status: rank for rank, status in enumerate(CheckStatus)}
