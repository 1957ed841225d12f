"""One process-tree sampler: a process and what it started, measured together."""

from __future__ import annotations

import doctest
import subprocess
import sys
import time

import psutil

import shipyard.process_tree as process_tree
from shipyard.process_tree import sample_tree

CHILD = "import time; b = bytearray(64 * 1024 * 1024); time.sleep(60)"
PARENT = f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", {CHILD!r}])
time.sleep(60)
"""


def test_a_sample_counts_the_descendants_and_none_once_the_root_is_gone() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT])
    try:
        deadline = time.monotonic() + 30
        sample = sample_tree(parent.pid)
        while sample is not None and sample.processes < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            sample = sample_tree(parent.pid)
        assert sample is not None and sample.processes == 2
        (child,) = psutil.Process(parent.pid).children()
        assert set(sample.cpu_seconds_by_pid) == {parent.pid, child.pid}
        assert sample.cpu_seconds == sum(sample.cpu_seconds_by_pid.values())
        while sample.rss_bytes < 64 * 1024**2 and time.monotonic() < deadline:
            time.sleep(0.05)
            sample = sample_tree(parent.pid) or sample
        assert sample.rss_bytes >= 64 * 1024**2  # the child's touched bytearray counts
    finally:
        for proc in psutil.Process(parent.pid).children(recursive=True):
            proc.kill()
        parent.kill()
        parent.wait()
    assert sample_tree(parent.pid) is None


def test_the_docstring_examples_run() -> None:
    result = doctest.testmod(process_tree)
    assert result.attempted >= 1 and result.failed == 0
