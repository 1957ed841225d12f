"""Where predictions run: a bounded pool of threads beside the event loop.

The event loop only reads requests and writes answers; parsing, the model and encoding run on
the pool, so health probes, ``/metrics`` and other clients keep being answered while a large
request is predicted. The pool has as many threads as the process may use cores (at least two,
so that one long prediction never holds the only thread), and admits at most ``threads + queue``
jobs at once: one more is refused at once with :class:`Overloaded`
(``503`` with ``Retry-After``), never queued without end. A job's slot is given back when its
thread finishes, not when its caller stops waiting, so a client that hangs up cannot make room
for more work than the threads can do.

The GIL still serialises Python work: a thread waiting for it gets it after at most one switch
interval (5 ms) of bytecode, or when the C call that holds it returns (decoding a 1 MiB JSON body
takes about 10 ms). What made a large request stall everyone for hundreds of milliseconds
was the garbage collector: the tens of thousands of lists a large JSON body decodes into trigger
full collections, and each one walked every object of the worker (NumPy, pandas, scikit-learn,
the models) with the GIL held — 590 ms at worst, measured beside 1 MiB requests on a loaded
2-core machine. :func:`freeze_heap` moves what a worker has loaded at startup out of the
collector's reach (``gc.freeze``), so a full collection walks only what requests allocated
(under 1 ms in the same measurement).

Handing a request to a thread and back costs about a quarter of a millisecond (two wake-ups and
two GIL hand-overs), a third of what a one-row request costs in all. :class:`InlineGate` lets
the requests that are known to be cheap skip the hop: a small body, to a version whose small
requests have been measured to finish within a budget, while a thread of the pool is free. Such
a request holds the event loop for at most about the budget, as a probe does; one that takes much
longer sends its version back to the pool until it is measured cheap again. "A thread is free",
not "the pool is idle": a small request sent to a pool thread beside a large job waits for the
GIL behind the event loop, which releases it only for moments and hands it over on the switch
interval (5 ms); beside maximum-size requests that wait was most of the small requests' p99
(``benchmarks/serving.py``, head-of-line row: ×2.1 the quiet p99 with "idle", ×1.7 with "free").
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from shipyard.errors import Overloaded

T = TypeVar("T")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def freeze_heap() -> None:
    """Collect once, then exempt every surviving object from later collections.

    Call it when the worker has loaded what it keeps (imports, models). Objects frozen are never
    collected by the cycle collector; reference counting still frees them, so a model that is
    later unloaded leaks only what sits in reference cycles."""
    gc.collect()
    gc.freeze()


class BoundedPool:
    """``threads`` worker threads and room for ``queue`` more jobs waiting; no more."""

    def __init__(self, name: str, threads: int | None = None, queue: int | None = None) -> None:
        self.name = name
        self.threads = threads or max(2, usable_cores())
        self.queue = self.threads * 2 if queue is None else queue
        self.capacity = self.threads + self.queue
        self._slots = threading.BoundedSemaphore(self.capacity)
        self._admitted = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix=f"shipyard-{name}")

    @property
    def admitted(self) -> int:
        """Jobs running or waiting now."""
        return self._admitted

    def try_acquire(self) -> bool:
        """Take one slot if one is free (the pool's own admission; tests fill a pool with it)."""
        if not self._slots.acquire(blocking=False):
            return False
        with self._lock:
            self._admitted += 1
        return True

    def release(self) -> None:
        with self._lock:
            self._admitted -= 1
        self._slots.release()

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on a pool thread; :class:`Overloaded` at once when no slot is free."""
        if not self.try_acquire():
            raise Overloaded(f"{self.name} jobs", self.capacity)
        try:
            future: Future[T] = self._executor.submit(fn)
        except BaseException:
            self.release()
            raise
        future.add_done_callback(lambda _: self.release())
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class InlineGate:
    """Which requests may run on the event loop itself rather than on the pool.

    A request qualifies when its body is at most ``body_bytes``, its version's small requests
    have taken ``budget_s`` or less on average (an exponentially weighted mean over at least
    ``proof`` of them, wall time, so waiting counts), and a thread of the pool is free (nothing
    waits in its queue): once every thread works, everything goes through the pool, so a full
    pool still refuses with :class:`Overloaded`. An inline
    request that takes more than ``demote_factor`` budgets sends its version back to the pool,
    where it must prove itself cheap again. ``budget_s=0`` turns the fast path off."""

    def __init__(
        self,
        body_bytes: int = 4096,
        budget_s: float = 0.002,
        proof: int = 8,
        demote_factor: float = 10.0,
        weight: float = 0.2,
    ) -> None:
        self.body_bytes = body_bytes
        self.budget_s = budget_s
        self.proof = proof
        self.demote_factor = demote_factor
        self.weight = weight
        self._mean_s: dict[Hashable, float] = {}
        self._seen: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    def admits(self, key: Hashable, body_bytes: int, pool: BoundedPool) -> bool:
        """Whether this request may run inline now."""
        return (
            body_bytes <= self.body_bytes
            and pool.admitted < pool.threads
            and self._seen.get(key, 0) >= self.proof
            and self._mean_s.get(key, float("inf")) <= self.budget_s
        )

    def observe(self, key: Hashable, body_bytes: int, seconds: float, inline: bool) -> None:
        """Record how long a request of ``key`` took (only small ones count)."""
        if body_bytes > self.body_bytes:
            return
        with self._lock:
            if inline and seconds > self.budget_s * self.demote_factor:
                self._seen[key] = 0
                self._mean_s.pop(key, None)
                return
            mean = self._mean_s.get(key)
            self._mean_s[key] = seconds if mean is None else mean + self.weight * (seconds - mean)
            self._seen[key] = self._seen.get(key, 0) + 1

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._seen.pop(key, None)
            self._mean_s.pop(key, None)
