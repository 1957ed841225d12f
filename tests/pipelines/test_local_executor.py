"""The local executor's process handling, where it departs from ``multiprocessing``'s own."""

from __future__ import annotations

import threading
import time
from multiprocessing import forkserver
from multiprocessing.connection import wait

import pytest

from shipyard.pipelines.local import _StepProcess


def test_two_threads_polling_one_step_both_read_its_real_exit_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression (CI): a parallel step that exited 0 was recorded as "exited with code 255".

    ``Process.start()`` on the warm-process thread polls every live child while a runner thread
    joins its step; the forkserver writes the exit code once, so the second reader got EOF.
    Reading is slowed here so that both threads are inside ``poll`` at once every time."""
    process = _StepProcess(target=int, name="shipyard-test-step")
    process.start()
    assert wait([process.sentinel], timeout=30), "the child did not exit"

    original = forkserver.read_signed

    def slow_read(fd: int) -> int:
        time.sleep(0.2)
        return original(fd)

    monkeypatch.setattr(forkserver, "read_signed", slow_read)
    codes: list[int | None] = []
    barrier = threading.Barrier(2)

    def poll() -> None:
        barrier.wait()
        codes.append(process._popen.poll())  # type: ignore[union-attr]

    threads = [threading.Thread(target=poll) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert codes == [0, 0]
    assert process.exitcode == 0
