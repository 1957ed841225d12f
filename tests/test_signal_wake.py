"""A signal handler that wakes a waiting thread must take no lock (``shipyard.supervision``).

``threading.Event.set`` in a handler deadlocks when the signal lands while its own thread holds
the event's lock: seen in CI, where a killed server worker sent its decoding helper the
parent-death signal more than once and the helper outlived it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from shipyard.supervision import WAKE_SIGNAL, SignalWake

# The watched process waits for a storm of its wake-up signal, sent by another process (so that
# signals land while its handler runs), and then says that its main thread still runs.
WATCHED = textwrap.dedent(
    """
    import os, sys, time
    from shipyard.supervision import ParentWatch
    watch = ParentWatch(os.getppid(), lambda: None, poll_s=0.001).start()
    print("ready", flush=True)
    sys.stdin.readline()
    print("alive", flush=True)
    """
)


def test_a_storm_of_wake_signals_leaves_the_watched_process_running() -> None:
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", WATCHED],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            assert proc.stdout.readline().strip() == "ready"
            for _ in range(20_000):
                os.kill(proc.pid, WAKE_SIGNAL)
            proc.stdin.write("done\n")
            proc.stdin.flush()
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise AssertionError("the watched process stopped in its signal handler") from None
        assert out.strip() == "alive", err[-2000:]


def test_a_wake_given_before_the_wait_is_kept_and_a_wait_without_one_times_out() -> None:
    wake = SignalWake()
    try:
        started = time.monotonic()
        assert not wake.wait(0.05)
        assert time.monotonic() - started >= 0.04
        for _ in range(100_000):  # more than the pipe holds: the extra wake-ups are dropped
            wake.set()
        assert wake.wait(0)
        assert not wake.wait(0), "one wait takes every pending wake-up"
    finally:
        wake.close()
    wake.set()  # closed: a late handler does nothing
    assert wake.wait(0)
