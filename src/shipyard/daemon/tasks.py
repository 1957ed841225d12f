"""The built-in tasks of the control loop, each a plain call into the wing that owns the work.

A task imports what it needs at the top of this module: a broken import stops the daemon at
start with its traceback, instead of silently switching a task off.
"""

from __future__ import annotations

import functools
import logging

from shipyard.alerting.cycle import CycleResult, evaluate
from shipyard.alerting.outbox import Outcome, deliver_due
from shipyard.daemon.loop import (
    CONTROL,
    DELIVERY,
    PROBES,
    ROLLOUTS,
    DaemonContext,
    PeriodicTask,
)
from shipyard.daemon.schedule import start_scheduled_runs
from shipyard.deploy.loop import Advance, advance_rollouts
from shipyard.monitoring.evaluate import evaluate_monitors
from shipyard.monitoring.progress import watch_running_runs
from shipyard.monitoring.serving.monitor import monitor_live_models
from shipyard.pipelines.reconcile import reconcile_runs
from shipyard.quota.admission import reclaim_expired, release_run_leases
from shipyard.quota.usage import record_usage
from shipyard.registry import Registry
from shipyard.serving.instances import reap_stale_instances
from shipyard.statuses import CheckStatus

log = logging.getLogger("shipyard.daemon")


def _monitors(ctx: DaemonContext) -> object:
    return evaluate_monitors(ctx.store, ctx.clock)


class ProgressWatch:
    """Running runs against their history's p95 and their steps' silence (TrainingSlow and
    RunStalled while they run); logs a line, with the run's ``run_id`` and ``pipeline``, when a
    run's verdict changes (a run first seen on pace says nothing)."""

    def __init__(self) -> None:
        self.last: dict[str, CheckStatus] = {}

    def __call__(self, ctx: DaemonContext) -> object:
        checks = watch_running_runs(ctx.store, ctx.clock)
        seen: dict[str, CheckStatus] = {}
        for check in checks:
            if check.run_id is None:
                continue
            seen[check.run_id] = check.status
            before = self.last.get(check.run_id, CheckStatus.OK)
            if check.status != before:
                log.log(
                    logging.INFO if check.status == CheckStatus.OK else logging.WARNING,
                    "run %s: %s (%s)",
                    check.run_id,
                    check.summary,
                    check.status,
                    extra={"run_id": check.run_id, "pipeline": check.labels.get("pipeline")},
                )
        self.last = seen  # runs that ended are judged by their end, not here
        return {"runs_watched": len(checks)}


class ServingProbes:
    """The serving monitors of every live model, probing the running model servers; logs a
    line when a model's verdicts change, not on every probe."""

    def __init__(self) -> None:
        self.last: dict[str, str] = {}

    def __call__(self, ctx: DaemonContext) -> object:
        checks = monitor_live_models(ctx.store, Registry.of(ctx.workspace), ctx.clock)
        for model, found in checks.items():
            state = ", ".join(f"{c.monitor} {c.status}" for c in found)
            if self.last.get(model) != state:
                log.info("model %s: %s", model, state)
                self.last[model] = state
        return checks


def _alerts(ctx: DaemonContext) -> CycleResult:
    return evaluate(ctx.store, ctx.alerting, ctx.clock.time())


def _deliver(ctx: DaemonContext) -> list[Outcome]:
    return deliver_due(ctx.store, ctx.alerting.receivers, ctx.clock, send_window=ctx.send_window)


def _rollouts(ctx: DaemonContext) -> list[Advance]:
    return advance_rollouts(ctx.workspace, ctx.clock)


def _reclaim(ctx: DaemonContext) -> object:
    return reclaim_expired(ctx.store, ctx.clock)


def _quota_usage(ctx: DaemonContext) -> object:
    """Reserved vs used, usage rate and time to exhaustion per pool (quota's usage series)."""
    return record_usage(ctx.store, ctx.clock)


def _reconcile_runs(ctx: DaemonContext) -> object:
    """End the runs whose runner died (their steps killed, their leases released), so that no
    schedule waits forever behind a run nobody runs."""
    return reconcile_runs(
        ctx.workspace, ctx.clock, release_leases=functools.partial(release_run_leases, ctx.store)
    )


def _reap_servers(ctx: DaemonContext) -> object:
    """Close the records of model servers that died without closing them (and release their
    leases when their process is provably gone), even when no new server starts to do it."""
    return reap_stale_instances(
        ctx.store,
        clock=ctx.clock,
        lease_ttl_s=ctx.workspace.settings.quota.lease_ttl_s,
        by="the daemon",
    )


def builtin_tasks() -> list[PeriodicTask]:
    """Every task a ``shipyard daemon`` runs, with its interval in seconds (0: every tick)."""
    return [
        PeriodicTask("runs.reconcile", 5, _reconcile_runs, lane=CONTROL),
        PeriodicTask("pipelines.schedule", 15, start_scheduled_runs, lane=CONTROL),
        PeriodicTask("monitors.evaluate", 30, _monitors, lane=CONTROL),
        PeriodicTask("monitors.progress", 15, ProgressWatch(), lane=CONTROL),
        PeriodicTask("monitors.serving", 30, ServingProbes(), lane=PROBES),
        PeriodicTask("alerts.evaluate", 0, _alerts, lane=CONTROL),
        PeriodicTask("notifications.deliver", 0, _deliver, lane=DELIVERY),
        PeriodicTask("rollouts.advance", 5, _rollouts, lane=ROLLOUTS),
        PeriodicTask("quota.reclaim", 5, _reclaim, lane=CONTROL),
        PeriodicTask("quota.usage", 5, _quota_usage, lane=CONTROL),
        PeriodicTask("serving.reap", 30, _reap_servers, lane=CONTROL),
    ]
