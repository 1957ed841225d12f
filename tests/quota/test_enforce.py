"""Enforcement on real processes: memory kill, CPU affinity, thread and device variables."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from shipyard.cli.runs import run_services
from shipyard.pipelines import Runner
from shipyard.pipelines.executor import Grant, StepRequest, UsageSample
from shipyard.pipelines.loader import load_pipeline
from shipyard.pipelines.records import get_run
from shipyard.quota.cpu_share import (
    AFFINITY,
    NOT_APPLIED,
    WATCHDOG,
    CgroupParent,
    CpuCgroup,
    CpuShare,
    cgroup_parents,
)
from shipyard.quota.enforce import MemoryWatchdog, QuotaEnforcer, tree_rss_bytes
from shipyard.workspace import Workspace

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


BUSY = "while True: pass"
SHARE_WINDOW_S = 1.5
# Held to a share s of a core, a busy loop uses s CPU-s per wall second, ±24 % of s (the duty
# cycle's 50 ms steps and a shared machine's noise over a 1.5 s window); unheld it uses a whole
# core. When the machine is so loaded that an unheld busy loop gets under 1.5 s, the share
# cannot be told apart from the load, and the test says so (skip) rather than pass for nothing;
# the 0.25 share still tells them apart on a machine too busy for the 0.5 one.
SHARE_TOLERANCE = 0.24
UNHELD_MARGIN = 1.5


def share_band(cores: float) -> tuple[float, float]:
    return cores * (1 - SHARE_TOLERANCE), cores * (1 + SHARE_TOLERANCE)


def skip_when_too_loaded(cores: float) -> None:
    with contextlib.contextmanager(busy)(None) as (pid, _):
        unheld = cpu_share_over(pid, 0.5)
    if unheld < UNHELD_MARGIN * cores:
        pytest.skip(f"an unheld busy loop gets {unheld:.2f} core here now: too loaded")


def busy(cores: float | None, mechanism: str = "cgroup") -> Iterator[tuple[int, CpuShare]]:
    proc = subprocess.Popen([sys.executable, "-c", BUSY], start_new_session=True)
    share = CpuShare(cores or 1.0, mechanisms=[mechanism])
    try:
        if cores is not None:
            share.start(proc.pid)
        yield proc.pid, share
    finally:
        share.stop()
        proc.kill()
        proc.wait(timeout=10)
        share.stop()  # idempotent; now that the process is gone its cgroup goes too


def cpu_share_over(pid: int, window_s: float) -> float:
    """CPU seconds the process used per wall second over ``window_s``."""
    proc = psutil.Process(pid)
    t0, c0 = time.monotonic(), sum(proc.cpu_times()[:2])
    deadline = t0 + window_s
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return (sum(proc.cpu_times()[:2]) - c0) / (time.monotonic() - t0)


def cgroups_writable() -> str | None:
    """Why CFS quota cannot be used here (None: it can)."""
    try:
        CpuCgroup.create(0.5).remove()
    except OSError as exc:
        return str(exc)
    return None


class TestFractionalCpu:
    """Issue #17 item 5: cpu=0.5 is half a core, not the whole core its affinity allows."""

    @pytest.mark.parametrize("cores", [0.5, 0.25])
    @pytest.mark.parametrize("mechanism", ["cgroup", "watchdog"])
    def test_a_busy_process_held_to_its_share(self, mechanism: str, cores: float) -> None:
        if mechanism == "cgroup" and (why := cgroups_writable()) is not None:
            pytest.skip(f"no writable cgroup here: {why}")
        skip_when_too_loaded(cores)
        with contextlib.contextmanager(busy)(cores, mechanism) as (pid, share):
            assert (
                share.mechanism == WATCHDOG
                if mechanism == "watchdog"
                else share.mechanism.startswith("cfs-quota (cgroup v")
            )
            used = cpu_share_over(pid, SHARE_WINDOW_S)
        low, high = share_band(cores)
        assert low <= used <= high, f"{used:.2f} cores of {cores} by {share.mechanism}"
        if mechanism == "cgroup":
            assert share._cgroup is None  # removed with its process

    def test_a_stopped_step_is_continued_when_let_go(self) -> None:
        proc = subprocess.Popen([sys.executable, "-c", BUSY], start_new_session=True)
        share = CpuShare(0.1, mechanisms=["watchdog"])
        try:
            share.start(proc.pid)
            deadline = time.monotonic() + 5
            while psutil.Process(proc.pid).status() != psutil.STATUS_STOPPED:
                assert time.monotonic() < deadline, "never throttled"
                time.sleep(0.005)
            share.stop()
            assert psutil.Process(proc.pid).status() != psutil.STATUS_STOPPED
        finally:
            proc.kill()
            proc.wait(timeout=10)

    def test_the_label_names_what_acted(self) -> None:
        enforcer = QuotaEnforcer(cpus=[0, 1], cpu_mechanisms=["watchdog"])
        half = enforcer.prepare(*request(cpu=0.5))
        assert half.to_json()["cpu_enforcement"] == NOT_APPLIED  # an executor never started it
        whole = enforcer.prepare(*request(cpu=1))
        assert whole.governor is not None
        whole.governor.start(os.getpid())
        assert whole.to_json()["cpu_enforcement"] == AFFINITY  # whole cores: affinity alone
        none = QuotaEnforcer(cpus=[0], cpu_mechanisms=[]).prepare(*request(cpu=0.5))
        assert none.governor is not None
        none.governor.start(os.getpid())
        assert none.to_json()["cpu_enforcement"] == NOT_APPLIED  # no mechanism allowed

    def test_cgroup_parents_are_read_from_proc(self, tmp_path: Path) -> None:
        v1 = tmp_path / "cpu"
        (v1 / "kubepods" / "pod1").mkdir(parents=True)
        v2 = tmp_path / "unified"
        (v2 / "user.slice").mkdir(parents=True)
        (v2 / "user.slice" / "cgroup.controllers").write_text("cpu memory pids\n")
        proc_cgroup = "4:cpu,cpuacct:/kubepods/pod1\n3:memory:/x\n0::/user.slice\n"
        mountinfo = (
            f"30 25 0:26 / {v1} rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
            f"31 25 0:27 / {tmp_path}/memory rw - cgroup cgroup rw,memory\n"
            f"32 25 0:28 / {v2} rw - cgroup2 cgroup2 rw\n"
            "33 25 0:29 / /proc rw - proc proc rw\n"
        )
        found = cgroup_parents(proc_cgroup, mountinfo)
        assert found == [
            CgroupParent(v2 / "user.slice", 2),
            CgroupParent(v1 / "kubepods" / "pod1", 1),
        ]
        (v2 / "user.slice" / "cgroup.controllers").write_text("memory pids\n")  # no cpu in v2
        assert cgroup_parents(proc_cgroup, mountinfo) == [CgroupParent(v1 / "kubepods/pod1", 1)]


SPIN = """
import json, time
from pathlib import Path
from shipyard.pipelines import Pipeline, Resources, step

@step(resources=Resources(cpu="500m", memory="200Mi"))
def spin() -> int:
    t0, c0 = time.monotonic(), time.process_time()
    while time.monotonic() - t0 < 1.5:
        pass
    used = (time.process_time() - c0) / (time.monotonic() - t0)
    Path("share.json").write_text(json.dumps(used))
    return 0

pipeline = Pipeline("spin", kind="data")

@pipeline
def build():
    spin()
"""


def test_a_step_declared_half_a_cpu_runs_on_half_a_core(
    workspace: Workspace, tmp_path: Path
) -> None:
    """The runner's local executor starts the governor on the step's process: a busy step that
    declared cpu=0.5 uses about half a core, and its record names the mechanism that acted."""
    skip_when_too_loaded(0.5)
    target = tmp_path / "spin.py"
    target.write_text(SPIN)
    file, pipeline = load_pipeline(str(target))
    with Runner(workspace, **run_services(workspace)) as runner:
        result = runner.run(file, pipeline)
    assert result.status == "succeeded", result.exit_reason
    used = json.loads((tmp_path / "share.json").read_text())
    (step,) = get_run(workspace.store, result.run_id)["steps"]
    mechanism = step["enforcement"]["cpu_enforcement"]
    assert mechanism == WATCHDOG or mechanism.startswith("cfs-quota (cgroup v")
    low, high = share_band(0.5)
    assert low <= used <= high, f"{used:.2f} cores by {mechanism}"
