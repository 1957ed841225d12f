"""A step placed by Ray records what acted on it: the CPU affinity and the runner's memory
watchdog act only on a process on the runner's machine; elsewhere they say ``not applied``."""

from __future__ import annotations

from shipyard.pipelines.driving import enforcement_record, watched_record
from shipyard.pipelines.executor import ProcessLimits, UsageSample
from shipyard.pipelines.ray_executor import limits_on

LABEL = "SHIPYARD_MEMORY_ENFORCEMENT"


def watchdog(sample: UsageSample) -> str | None:
    return None


LIMITS = ProcessLimits(
    env={"OMP_NUM_THREADS": "1", LABEL: "watchdog"},
    cpu_affinity=[0],
    memory_limit_bytes=2**30,
    watchdog=watchdog,
)


def test_a_step_with_a_process_here_records_its_affinity_and_watchdog() -> None:
    record = enforcement_record(LIMITS, here=True)
    assert record["cpu_affinity"] == [0] and record["watchdog"] is True
    assert record["env"][LABEL] == "watchdog"


def test_a_step_placed_elsewhere_records_them_not_applied_until_watched_here() -> None:
    record = enforcement_record(LIMITS, here=False)
    assert record["cpu_affinity"] == "not applied" and record["watchdog"] == "not applied"
    assert record["env"] == {"OMP_NUM_THREADS": "1", LABEL: "not applied"}
    assert record["memory_limit_bytes"] == 2**30  # what was granted, still said
    watched = watched_record(record, LIMITS)  # the runner found the worker on its machine
    assert watched["watchdog"] is True and watched["env"][LABEL] == "watchdog"
    assert watched["cpu_affinity"] == "not applied"  # Ray placed it: no affinity was set
    bare = enforcement_record(ProcessLimits(env={"OMP_NUM_THREADS": "1"}), here=False)
    assert bare["cpu_affinity"] is None and bare["watchdog"] is False  # nothing was asked


def test_a_ray_worker_on_another_machine_tells_the_step_nothing_watches_its_memory() -> None:
    assert limits_on("node-b", "node-a", LIMITS).env[LABEL] == "not applied"
    assert limits_on("node-a", "node-a", LIMITS) is LIMITS
    plain = ProcessLimits(env={"OMP_NUM_THREADS": "1"})
    assert limits_on("node-b", "node-a", plain) is plain
