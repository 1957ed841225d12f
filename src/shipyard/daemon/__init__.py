"""The control loop (``shipyard daemon``): periodic tasks run by one leader at a time.

Built in (:func:`shipyard.daemon.tasks.builtin_tasks`): ``pipelines.schedule`` (cron),
``monitors.evaluate``, ``monitors.serving`` (the serving monitors of every live model, probing
the running model servers), ``alerts.evaluate``, ``notifications.deliver``, ``rollouts.advance``,
``quota.reclaim``, ``quota.usage``. A face hands the task list to :class:`Daemon`; nothing is
looked up by name.

**One actor.** Several daemons may run against one database; a thread of each renews (or
takes, once expired) the row ``leader_leases['daemon']`` in a transaction with a row lock,
apart from the work, and only the holder runs leader-only tasks. A daemon that stops cleanly
(SIGTERM) gives the lease up once its tasks have stopped; one that is SIGKILLed loses it
``leader_ttl_s`` later. Outbound calls are fenced: a daemon sends only while its lease will
outlast the call's deadline (:mod:`shipyard.daemon.leadership`).

**Nothing held up.** Tasks run in lanes, a thread each (:mod:`shipyard.daemon.loop`): a hung
receiver or model server delays its own lane, never rule evaluation or rollouts.

**Nothing lost.** Every task's decisions are rows committed before they take effect (alert
states with their outbox rows, cron slots before a launch), so a daemon killed at any point
resumes where it was, at worst re-sending a notification (at-least-once).

This package's top level loads no service: commands that only ask whether a daemon runs
(:func:`no_daemon_note`) stay quick to start; :mod:`shipyard.daemon.tasks` loads them all.
"""

from shipyard.daemon.leadership import (
    LEADER,
    NO_DAEMON,
    Leadership,
    LeaderView,
    RecordedConfig,
    acquire_leadership,
    current_leader,
    no_daemon_note,
    record_config,
    recorded_config,
    release_leadership,
)
from shipyard.daemon.loop import (
    ALERTING_CONFIG,
    CONTROL,
    DELIVERY,
    PROBES,
    ROLLOUTS,
    Daemon,
    DaemonContext,
    PeriodicTask,
    run_until_signalled,
)
from shipyard.daemon.schedule import Launcher, start_scheduled_runs, subprocess_launcher

__all__ = [
    "ALERTING_CONFIG",
    "CONTROL",
    "DELIVERY",
    "LEADER",
    "NO_DAEMON",
    "PROBES",
    "ROLLOUTS",
    "Daemon",
    "DaemonContext",
    "Launcher",
    "LeaderView",
    "Leadership",
    "PeriodicTask",
    "RecordedConfig",
    "acquire_leadership",
    "current_leader",
    "no_daemon_note",
    "record_config",
    "recorded_config",
    "release_leadership",
    "run_until_signalled",
    "start_scheduled_runs",
    "subprocess_launcher",
]
