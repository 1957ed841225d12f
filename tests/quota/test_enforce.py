"""Enforcement on real processes: memory kill, CPU affinity, thread and device variables."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from shipyard.pipelines.executor import Grant, StepRequest, UsageSample
from shipyard.quota.enforce import MemoryWatchdog, QuotaEnforcer, tree_rss_bytes

MiB = 1024**2


def request(**resources: float) -> tuple[StepRequest, Grant]:
    req = StepRequest("etl", "run1", "load", "sr1", dict(resources))
    return req, Grant(req, "lease1", dict(resources))


HOG = textwrap.dedent(
    """
    import time
    blocks = []
    while True:
        blocks.append(bytearray(8 * 1024 * 1024))   # touched: RSS grows
        time.sleep(0.01)
    """
)


class TestMemory:
    def test_a_step_that_allocates_without_bound_is_killed_at_its_limit(self) -> None:
        _req, grant = request(cpu=1, memory=100 * MiB)
        limits = QuotaEnforcer(memory_margin=0.10).prepare(*request(cpu=1, memory=100 * MiB))
        assert grant.granted["memory"] == 100 * MiB
        assert limits.memory_limit_bytes == int(110 * MiB)
        watchdog = limits.watchdog
        assert isinstance(watchdog, MemoryWatchdog)
        proc = subprocess.Popen([sys.executable, "-c", HOG], env={**os.environ, **limits.env})
        watchdog.watch(proc.pid)
        assert proc.wait(timeout=60) == -9  # SIGKILL
        assert watchdog.reason is not None
        assert watchdog.reason.startswith("exceeded memory quota: used ")
        assert watchdog.reason.endswith(" of 100.0Mi (watchdog)")
        assert watchdog.peak_rss_bytes > 110 * MiB
        assert limits.env["SHIPYARD_MEMORY_ENFORCEMENT"] == "watchdog"

    def test_children_count_towards_the_tree(self) -> None:
        code = "import subprocess,sys,time; p=subprocess.Popen([sys.executable,'-c',"
        code += "'x=bytearray(200*1024*1024); import time; time.sleep(30)']); time.sleep(30)"
        proc = subprocess.Popen([sys.executable, "-c", code])
        try:
            for _ in range(200):
                rss = tree_rss_bytes(proc.pid)
                if rss and rss > 200 * MiB:
                    break
                import time

                time.sleep(0.05)
            assert rss is not None and rss > 200 * MiB
            watchdog = MemoryWatchdog(150 * MiB, 128 * MiB)
            watchdog.watch(proc.pid)
            assert proc.wait(timeout=30) == -9
        finally:
            proc.kill()
            proc.wait()

    def test_under_the_limit_is_left_alone(self) -> None:
        watchdog = MemoryWatchdog(110 * MiB, 100 * MiB)
        assert watchdog(UsageSample(100 * MiB, 1.0, 1)) is None
        assert watchdog(UsageSample(111 * MiB, 1.0, 1)) is not None


class TestCpuAndDevices:
    def test_affinity_and_thread_variables_applied_in_the_child(self) -> None:
        available = sorted(os.sched_getaffinity(0))
        if len(available) < 2:
            pytest.skip("needs at least 2 CPUs to show a restriction")
        limits = QuotaEnforcer(cpus=available).prepare(*request(cpu=1, memory=64 * MiB))
        assert limits.cpu_affinity is not None and len(limits.cpu_affinity) == 1
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "import os; print(sorted(os.sched_getaffinity(0)), os.environ['OMP_NUM_THREADS'])",
            ],
            env={**os.environ, **limits.env},
            preexec_fn=limits.apply_here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split(maxsplit=1)
        assert out[0].strip("[]") == str(limits.cpu_affinity[0])
        assert out[1].strip() == "1"
        assert limits.env["OPENBLAS_NUM_THREADS"] == limits.env["MKL_NUM_THREADS"] == "1"

    def test_concurrent_steps_get_different_cpus(self) -> None:
        enforcer = QuotaEnforcer(cpus=[0, 1, 2, 3])
        first = enforcer.prepare(*request(cpu=2)).cpu_affinity
        second = enforcer.prepare(*request(cpu=1.5)).cpu_affinity
        assert first == [0, 1] and second == [2, 3]

    def test_cuda_visible_devices_names_only_the_granted_gpus(self) -> None:
        enforcer = QuotaEnforcer(cpus=[0])
        assert enforcer.prepare(*request(cpu=1)).env["CUDA_VISIBLE_DEVICES"] == ""
        assert enforcer.prepare(*request(cpu=1, gpu=2)).env["CUDA_VISIBLE_DEVICES"] == "0,1"
        req = StepRequest("etl", "r", "s", "sr", {"gpu": 1})
        grant = Grant(req, "l", {"gpu": 1}, {"assigned": {"gpu": [3]}})
        assert enforcer.prepare(req, grant).env["CUDA_VISIBLE_DEVICES"] == "3"
