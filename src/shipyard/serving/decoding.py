"""Large request bodies are decoded in a helper process, away from the worker's GIL.

Decoding a maximum-size JSON body (1 MiB, about 12,000 rows) and validating it into an array is
one long stretch of C and Python that holds the GIL for tens of milliseconds; everything else the
worker does (probes, ``/metrics``, every small request) waits for it, whichever thread runs it.
Measured beside such requests, decoding was 97 % of the GIL time a large request took (the model
and the answer's encoding were about a millisecond each). So a body of ``offload_bytes`` or more
is handed to a :class:`Decoder`: one helper process per worker, started on the first large
body, that runs the same parse function and sends back what it built (an array, or the request's
``V2Request``). The server sends a large body ahead from its event loop and awaits the answer
there (:meth:`Decoder.decode_ahead`), so a request waiting for the helper holds neither the GIL nor
a thread of the prediction pool; nothing else changes: the same functions run, the same limits
apply, a refusal is the same error class with the same message and field, raised where the body is
used.

Both ends are Shipyard's own processes on a private pipe, so the pickle that
:class:`~concurrent.futures.ProcessPoolExecutor` uses for its arguments and results carries
nothing a client wrote as code: a request body travels as ``bytes``. Errors travel as
(class, message, fields) and are rebuilt only as subclasses of :class:`ShipyardError`.

Two things keep the helper from taking the CPU that the worker's other requests need (where the
worker, its helper and their clients share a few cores, the helper's CPU is what small requests
lost beside large ones). Its garbage collector: a large body decodes into some 12,000 lists,
which trigger full collections of the helper's heap (the modules its parse functions import); a
1 MiB body cost the helper 16–23 ms of CPU with them, 9 ms without. So the helper freezes its heap
(``gc.freeze``) whenever a job has brought a new import, as the worker does at startup. And its
priority: it runs ``helper_niceness`` (10) below its worker (``os.nice``), so when every core is
busy the scheduler serves the worker first and the large bodies wait, not the small requests; on
an idle core the helper runs at full speed.

The helper dies with its worker (a parent-death signal, with a watch on the parent's pid behind
it). If it dies first, the request at hand is decoded in the worker as before and the next large
body starts a new helper; if it cannot start at all (``spawn`` re-imports the main module, so a
script that starts a server without an ``if __name__ == "__main__":`` guard breaks it, as it breaks
any use of multiprocessing), the decoder says so once and decodes in the worker from then on.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

from shipyard.errors import Overloaded, ShipyardError

log = logging.getLogger("shipyard.serving")

T = TypeVar("T")

OFFLOAD_BYTES = 64 * 1024
"""Bodies this large or larger are decoded in the helper process (about 1 ms of decoding)."""
MAX_WAITING = 8
"""Large bodies sent to the helper and not yet back; one more is refused with ``Overloaded``."""
HELPER_NICENESS = 10
"""How far below its worker the helper's CPU priority is (``os.nice``; 0 keeps it level)."""


@dataclass(frozen=True)
class _Refusal:
    """A :class:`ShipyardError` raised in the helper, as plain data."""

    module: str
    name: str
    message: str
    fields: dict[str, Any]

    def rebuild(self) -> ShipyardError:
        cls = getattr(importlib.import_module(self.module), self.name, None)
        if not (
            self.module.startswith("shipyard.")
            and isinstance(cls, type)
            and issubclass(cls, ShipyardError)
        ):
            return ShipyardError(self.message)
        exc = cls.__new__(cls)
        Exception.__init__(exc, self.message)
        exc.__dict__.update(self.fields)
        return exc


@dataclass(frozen=True)
class Decoded:
    """What became of a body sent ahead to the helper: its value, its refusal, or ``here``
    (the helper died on it: decode it in the worker)."""

    value: Any = None
    refusal: ShipyardError | None = None
    here: bool = False

    def get(self) -> Any:
        if self.refusal is not None:
            raise self.refusal
        return self.value


_FROZEN_AT_MODULES = [0]
"""In the helper: how many modules were imported when its heap was last frozen."""


def _freeze_imports() -> None:
    """In the helper: exempt what it has imported from the cycle collector, once per new import
    (a job's function is imported when the job arrives, before it runs)."""
    if len(sys.modules) != _FROZEN_AT_MODULES[0]:
        gc.collect()
        gc.freeze()
        _FROZEN_AT_MODULES[0] = len(sys.modules)


def _decode(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """In the helper: run ``fn(*args)``; a refusal comes back as data, not as a pickled error."""
    _freeze_imports()
    try:
        return fn(*args)
    except ShipyardError as exc:
        cls = type(exc)
        return _Refusal(cls.__module__, cls.__qualname__, str(exc), dict(exc.__dict__))


def _start_helper(parent_pid: int, niceness: int) -> None:
    """The helper's initializer: end when the worker that started it is gone; yield the CPU to
    it (``niceness`` below its priority)."""
    from shipyard.supervision import ParentWatch

    ParentWatch(parent_pid, lambda: None, poll_s=1.0, grace_s=1.0).start()
    if niceness > 0 and hasattr(os, "nice"):  # no os.nice on Windows
        os.nice(niceness)


class Decoder:
    """Runs a body's parse function here for small bodies, in the helper process for large ones.

    ``offload_bytes=0`` decodes everything here (no helper process). :meth:`decode_ahead` sends
    a large body from the event loop and awaits it there, so a request waiting for the helper
    holds no thread of the prediction pool; at most ``max_waiting`` bodies wait at once. The
    helper runs ``helper_niceness`` below this process's CPU priority."""

    def __init__(
        self,
        offload_bytes: int = OFFLOAD_BYTES,
        max_waiting: int = MAX_WAITING,
        helper_niceness: int = HELPER_NICENESS,
    ) -> None:
        if helper_niceness < 0:
            raise ValueError(
                "helper_niceness must be 0 or more (a helper never outranks its worker)"
            )
        self.offload_bytes = offload_bytes
        self.max_waiting = max_waiting
        self.helper_niceness = helper_niceness
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._answered = False
        self._waiting = 0

    @property
    def started(self) -> bool:
        return self._executor is not None

    @property
    def waiting(self) -> int:
        """Bodies sent ahead to the helper and not yet back."""
        return self._waiting

    def offloads(self, body_bytes: int) -> bool:
        """Whether a body this large is decoded in the helper."""
        return bool(self.offload_bytes) and body_bytes >= self.offload_bytes

    def _helper(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_helper,
                    initargs=(os.getpid(), self.helper_niceness),
                )
            return self._executor

    def _lost(self, helper: ProcessPoolExecutor) -> None:
        """``helper`` broke: forget it (the next large body starts another), or stop offloading
        if it never answered (it cannot start here)."""
        with self._lock:
            if self._executor is helper:
                self._executor = None
                if not self._answered:
                    self.offload_bytes = 0  # it cannot start here: stop paying for tries
                    log.warning(
                        "the decoding helper process could not start (a main module that "
                        "starts a server must be guarded by `if __name__ == '__main__':`, "
                        "as multiprocessing requires); large bodies are decoded in the "
                        "worker from now on"
                    )
                else:
                    log.warning("the decoding helper process died; decoding this one here")

    def _outcome(self, got: Any) -> Any:
        self._answered = True
        if isinstance(got, _Refusal):
            raise got.rebuild()
        return got

    def decode(self, fn: Callable[..., T], body: bytes, *args: Any) -> T:
        """``fn(body, *args)``, run where the body's size says; raises what ``fn`` raises."""
        if not self.offloads(len(body)):
            return fn(body, *args)
        helper = self._helper()
        try:
            got = helper.submit(_decode, fn, (body, *args)).result()
        except BrokenProcessPool:
            self._lost(helper)
            return fn(body, *args)
        result: T = self._outcome(got)
        return result

    async def decode_ahead(self, fn: Callable[..., Any], body: bytes, *args: Any) -> Decoded | None:
        """On the event loop: ``fn(body, *args)`` in the helper, awaited without a thread;
        None for a body decoded where it is used (a small one, or no helper here).

        Raises :class:`Overloaded` when ``max_waiting`` bodies already wait for the helper."""
        if not self.offloads(len(body)):
            return None
        if self._waiting >= self.max_waiting:
            raise Overloaded("decoding jobs", self.max_waiting)
        self._waiting += 1
        helper = self._helper()
        try:
            got = await asyncio.wrap_future(helper.submit(_decode, fn, (body, *args)))
        except BrokenProcessPool:
            self._lost(helper)
            return Decoded(here=True)
        finally:
            self._waiting -= 1
        try:
            return Decoded(self._outcome(got))
        except ShipyardError as exc:
            return Decoded(refusal=exc)

    def helper_pid(self) -> int:
        """The helper process's pid (starting it if need be)."""
        pid: int = self._helper().submit(os.getpid).result()
        self._answered = True
        return pid

    def shutdown(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
