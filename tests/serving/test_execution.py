"""The prediction pool admits at most its threads plus its queue, and counts a job until its
thread is done with it, whatever its caller does."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

import pytest

from shipyard.serving.execution import BoundedPool, Overloaded


async def _until(check: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


class TestBoundedPool:
    def test_one_job_more_than_threads_and_queue_is_refused_at_once(self) -> None:
        pool = BoundedPool("test", threads=1, queue=1)
        release = threading.Event()

        async def scenario() -> None:
            held = [asyncio.ensure_future(pool.run(lambda: release.wait(10))) for _ in range(2)]
            await _until(lambda: pool.admitted == 2)
            with pytest.raises(Overloaded, match="2 test jobs"):
                await pool.run(lambda: None)
            release.set()
            assert await asyncio.gather(*held) == [True, True]
            await _until(lambda: pool.admitted == 0)
            assert await pool.run(lambda: 7) == 7

        try:
            asyncio.run(scenario())
        finally:
            release.set()
            pool.shutdown()

    def test_a_slot_is_held_until_its_thread_finishes_even_if_the_caller_gave_up(self) -> None:
        pool = BoundedPool("test", threads=1, queue=0)
        release = threading.Event()

        async def scenario() -> None:
            task = asyncio.ensure_future(pool.run(lambda: release.wait(10)))
            await _until(lambda: pool.admitted == 1)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert pool.admitted == 1  # the thread still runs the job
            with pytest.raises(Overloaded):
                await pool.run(lambda: None)
            release.set()
            await _until(lambda: pool.admitted == 0)
            assert await pool.run(lambda: "free") == "free"

        try:
            asyncio.run(scenario())
        finally:
            release.set()
            pool.shutdown()

    def test_an_exception_in_a_job_reaches_its_caller_and_frees_the_slot(self) -> None:
        pool = BoundedPool("test", threads=1, queue=0)

        def fail() -> None:
            raise ValueError("bad job")

        async def scenario() -> None:
            with pytest.raises(ValueError, match="bad job"):
                await pool.run(fail)
            await _until(lambda: pool.admitted == 0)

        try:
            asyncio.run(scenario())
        finally:
            pool.shutdown()

    def test_the_pool_has_at_least_two_threads_and_a_queue_twice_as_long(self) -> None:
        pool = BoundedPool("test")
        try:
            assert pool.threads >= 2 and pool.capacity == 3 * pool.threads
        finally:
            pool.shutdown()
