"""The shadow helper: one process per model-server worker that answers its shadow copies.

Started by the worker's :class:`shipyard.serving.shadow.ShadowCopies` on the first copy, with
its end of a ``SOCK_SEQPACKET`` socket pair. It:

* ends with its worker: a :class:`shipyard.supervision.ParentWatch` (the parent-death signal,
  with a watch on the parent's pid behind it, as the decoding helper), and the end of file on
  its socket when the worker closes its end;
* runs at the lowest CPU priority there is once it has started (:func:`lowest_priority`), so
  that it only takes the CPU the requests leave: on a machine kept busy it answers late, or the
  channel fills and copies are dropped;
* loads each shadow version with :meth:`shipyard.registry.Registry.load` (the digest check and
  the pickle rule of any model the server loads) and runs nothing else that came from outside:
  copies arrive as JSON and raw numbers (:func:`shipyard.serving.shadow.decode_copy`);
* wakes at most ``1 / DRAIN_INTERVAL_S`` times a second, not once a copy: after a copy wakes it
  (or after the last drain found copies) it sleeps ``DRAIN_INTERVAL_S`` while copies gather in
  the socket, then drains the socket and answers every copy with one ``predict`` per shadow
  version and row shape (``MAX_BATCH_ROWS`` rows a call at most), each copy on its own where
  the batch fails (so a failure is the copy's own). The same answers as one request at a time
  for any model that answers each row on its own (every flavor Shipyard serves). With no
  copies it blocks until one arrives;
* writes the pairs every ``flush_interval_s`` to the shadow log (one Parquet artifact per
  model, stable and shadow version: the file first, then one short transaction; dated by its
  last copy on the worker's clock, :class:`CopiesClock`), and reports
  its counts (answered, failed, and dropped when the shadow version cannot load here) to the
  worker as often (each report wakes a thread of the worker, which takes its GIL).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from shipyard.serving.shadow import (
    SHADOW_LOG_KIND,
    SHADOW_LOG_MEDIA_TYPE,
    ShadowCopy,
    decode_copy,
    encode_counts,
)

if TYPE_CHECKING:
    from shipyard.artifacts import ArtifactStore
    from shipyard.registry import Registry
    from shipyard.registry.flavors import Predictor
    from shipyard.store import Store

log = logging.getLogger("shipyard.serving")

DRAIN_INTERVAL_S = 0.2
"""The helper drains its socket at most this often: the copies that arrive meanwhile wait in
the socket (the worker's ``CAPACITY_BYTES`` holds a second or more of them at a few thousand
requests a second) and are answered together, one wake-up for all of them."""
MAX_BATCH_ROWS = 512
"""The rows of one ``predict`` call, at most."""
MAX_MESSAGE_BYTES = 8 << 20
"""A copy larger than this is dropped (the worker's send buffer is far smaller anyway)."""
LOAD_RETRY_S = 10.0
"""A shadow version that failed to load here is tried again this much later."""


Answered = tuple["np.ndarray[Any, Any] | None", "str | None"]
"""The shadow's answer to one copy's rows, or its failure."""


@dataclass(frozen=True)
class HelperSetup:
    """What the helper needs from its worker: plain values, sent at start."""

    parent_pid: int
    registry_db_url: str
    registry_artifact_url: str
    log_db_url: str | None
    log_artifact_url: str | None
    flush_interval_s: float = 1.0


class _Columns:
    """The shadow log's pairs of one (model, stable, shadow) waiting for the next flush, one
    list a column: what each shadow-log row holds."""

    COLUMNS = ("request_id", "ts", "request", "stable", "shadow", "error", "shadow_ms")
    __slots__ = ("error", "request", "request_id", "shadow", "shadow_ms", "stable", "ts")

    def __init__(self) -> None:
        self.request_id: list[str] = []
        self.ts: list[float] = []
        self.request: list[str] = []
        self.stable: list[str] = []
        self.shadow: list[str | None] = []
        self.error: list[str | None] = []
        self.shadow_ms: list[float | None] = []

    def add(
        self,
        request_id: str,
        ts: float,
        request: str,
        stable: str,
        shadow: str | None,
        error: str | None,
        shadow_ms: float,
    ) -> None:
        self.request_id.append(request_id)
        self.ts.append(ts)
        self.request.append(request)
        self.stable.append(stable)
        self.shadow.append(shadow)
        self.error.append(error)
        self.shadow_ms.append(shadow_ms if math.isfinite(shadow_ms) else None)

    def parquet(self) -> bytes:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({name: getattr(self, name) for name in self.COLUMNS})
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return buf.getvalue()


class CopiesClock:
    """The worker's time as the copies carry it: the shadow log is dated by the last copy it
    holds, on its worker's clock (a fake one in tests), so the judge's window on that clock
    finds it."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def lowest_priority() -> str:
    """Put this process at the lowest CPU priority allowed: ``SCHED_IDLE`` (runs only on a CPU
    nothing else wants, see sched(7)), else ``nice 19``. Returns which one it got.

    Linux applies a policy to one thread, and a new thread takes its creator's; so every thread
    there is now (a math library's pool started at import, say) is set, and those started later
    follow."""
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    try:
        for tid in threads:
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        pass
    else:
        return "SCHED_IDLE"
    with contextlib.suppress(OSError):
        os.nice(19 - os.nice(0))
        return "nice 19"
    return "normal"


def run_helper(sock: socket.socket, setup: HelperSetup) -> None:
    """The helper process's body (``multiprocessing`` ``spawn`` target)."""
    from shipyard.artifacts import ArtifactStore
    from shipyard.registry import Registry
    from shipyard.store import Store
    from shipyard.supervision import ParentWatch

    logging.basicConfig(level=logging.WARNING)
    ParentWatch(setup.parent_pid, lambda: None, poll_s=1.0, grace_s=1.0).start()
    store = Store(setup.registry_db_url, migrate=False)
    registry = Registry(store, ArtifactStore(setup.registry_artifact_url, store))
    log_store: Store | None = None
    log_artifacts: ArtifactStore | None = None
    if setup.log_db_url is not None and setup.log_artifact_url is not None:
        log_store = store if setup.log_db_url == store.url else Store(setup.log_db_url)
        log_artifacts = ArtifactStore(setup.log_artifact_url, log_store, CopiesClock())
    lowest_priority()  # after the start-up, which a busy machine would otherwise stretch
    ShadowHelper(sock, registry, log_artifacts, setup.flush_interval_s).run()
    sock.close()


class ShadowHelper:
    """Answers the copies that arrive on ``sock`` and writes the shadow log to ``artifacts``
    (None: answered and counted, not logged)."""

    def __init__(
        self,
        sock: socket.socket,
        registry: Registry,
        artifacts: ArtifactStore | None,
        flush_interval_s: float = 1.0,
    ) -> None:
        self.sock = sock
        self.registry = registry
        self.artifacts = artifacts
        self.flush_interval_s = flush_interval_s
        self._buffer = bytearray(MAX_MESSAGE_BYTES)
        self._predictors: dict[str, tuple[int, Predictor | None, float]] = {}
        self._batch: dict[tuple[str, int, int], _Columns] = {}
        self._counts: dict[tuple[str, int, str], int] = {}

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> None:
        """Until the worker closes its end: drain, answer, report, flush; then a last flush."""
        self.sock.setblocking(True)  # each call says whether it waits
        next_flush = time.monotonic() + self.flush_interval_s
        found = False  # whether the last drain found copies: then more are on their way
        ended = False
        while not ended:
            if not found:  # idle: block until a copy arrives (or the next flush)
                select.select([self.sock], [], [], max(0.0, next_flush - time.monotonic()))
            # let copies gather: one wake-up and one predict answer all of them
            time.sleep(max(0.0, min(DRAIN_INTERVAL_S, next_flush - time.monotonic())))
            items, ended = self._drain()
            found = bool(items)
            for batch in _batches(items):
                try:
                    self._answer(batch)
                except Exception as exc:  # one bad batch must not end the helper
                    log.error("shadow copies of %d request(s) failed: %s", len(batch), exc)
            if ended or time.monotonic() >= next_flush:
                self._flush_safely()
                self._report()  # once a flush: each report wakes a thread of the worker
                next_flush = time.monotonic() + self.flush_interval_s

    def _receive(self, flags: int) -> ShadowCopy | object | None:
        """The next copy; ``_END`` at the end of file; None for a message that is not one."""
        try:
            n = self.sock.recv_into(self._buffer, 0, flags | socket.MSG_TRUNC)
        except (ConnectionError, OSError) as exc:
            if isinstance(exc, BlockingIOError):
                raise
            return _END
        if n == 0:
            return _END
        if n > len(self._buffer):
            log.error("a shadow copy of %d bytes is too large; dropped", n)
            return None
        try:
            return decode_copy(bytes(self._buffer[:n]))
        except (ValueError, TypeError, KeyError) as exc:
            log.error("unreadable shadow copy: %s", exc)
            return None

    def _drain(self) -> tuple[list[ShadowCopy], bool]:
        """Every copy waiting in the socket; whether the worker closed its end."""
        items: list[ShadowCopy] = []
        while True:
            try:
                item = self._receive(socket.MSG_DONTWAIT)
            except BlockingIOError:
                return items, False
            if item is _END:
                return items, True
            if isinstance(item, ShadowCopy):
                items.append(item)

    # -- answering ------------------------------------------------------------------------------
    def _predictor(self, model: str, version: int) -> Predictor | None:
        """The shadow version's predictor, loaded once (the last shadow of each model is kept);
        None while it cannot load here."""
        held = self._predictors.get(model)
        if (
            held is not None
            and held[0] == version
            and (held[1] is not None or time.monotonic() < held[2])
        ):
            return held[1]
        try:
            _, predictor = self.registry.load(model, version=version)
        except Exception as exc:
            log.error("the shadow helper cannot load %s/%s: %s", model, version, exc)
            self._predictors[model] = (version, None, time.monotonic() + LOAD_RETRY_S)
            return None
        self._predictors[model] = (version, predictor, 0.0)
        return predictor

    def _answer(self, items: list[ShadowCopy]) -> None:
        """The shadow's answers to a batch of copies: one predict per shadow version and row
        shape; each copy on its own where the batch fails, so a failure is the copy's."""
        groups: dict[tuple[str, int, str, tuple[int, ...]], list[ShadowCopy]] = {}
        for item in items:
            key = (item.model, item.shadow_version, item.x.dtype.str, item.x.shape[1:])
            groups.setdefault(key, []).append(item)
        for (model, version, _, _), group in groups.items():
            predictor = self._predictor(model, version)
            if predictor is None:
                self._count(model, version, "dropped", len(group))
                continue
            xs = [item.x for item in group]
            began = time.perf_counter()
            try:
                got = _checked(predictor.predict(np.concatenate(xs)), sum(map(len, xs)))
                bounds = np.cumsum([len(x) for x in xs])[:-1]
                answers: list[Answered] = [
                    (part, _not_finite(part)) for part in np.split(got, bounds)
                ]
            except Exception:
                answers = [_alone(predictor, x) for x in xs]
            took_ms = (time.perf_counter() - began) * 1000.0 / len(group)
            self._record(group, answers, took_ms)

    def _count(self, model: str, version: int, outcome: str, n: int) -> None:
        if n:
            key = (model, version, outcome)
            self._counts[key] = self._counts.get(key, 0) + n

    def _record(self, group: list[ShadowCopy], answers: list[Answered], took_ms: float) -> None:
        first = group[0]
        failed = sum(error is not None for _, error in answers)
        self._count(first.model, first.shadow_version, "failed", failed)
        self._count(first.model, first.shadow_version, "answered", len(group) - failed)
        if self.artifacts is None:
            return
        for item, (got, error) in zip(group, answers, strict=True):
            key = (item.model, item.stable_version, item.shadow_version)
            columns = self._batch.get(key)
            if columns is None:
                columns = self._batch[key] = _Columns()
            columns.add(
                item.request_id,
                item.ts,
                _json(item.x),
                _json(item.stable_answer),
                _json(got) if got is not None and not error else None,
                error,
                took_ms,
            )

    def _report(self) -> None:
        """Send the counts since the last report to the worker."""
        if not self._counts:
            return
        with contextlib.suppress(OSError):  # the worker is gone: this process ends soon
            self.sock.send(encode_counts(self._counts))
        self._counts = {}

    # -- the shadow log -------------------------------------------------------------------------
    def _flush_safely(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # the store may be away: keep the batch, try again later
            log.warning("shadow log flush failed, will retry: %s", exc)

    def flush(self) -> int:
        """Write every waiting batch as one artifact per (model, stable, shadow); returns the
        pairs written."""
        if self.artifacts is None or not self._batch:
            return 0
        written = 0
        for key in list(self._batch):
            model, stable, shadow = key
            columns = self._batch[key]
            if isinstance(self.artifacts.clock, CopiesClock):
                self.artifacts.clock.now = max(columns.ts)
            self.artifacts.put_bytes(
                columns.parquet(),
                SHADOW_LOG_MEDIA_TYPE,
                {
                    "kind": SHADOW_LOG_KIND,
                    "model": model,
                    "version": shadow,
                    "stable_version": stable,
                    "rows": len(columns.ts),
                    "first_ts": min(columns.ts),
                },
            )
            del self._batch[key]
            written += len(columns.ts)
        return written


_END = object()
"""The worker closed its end of the channel."""


def _checked(values: Any, rows: int) -> np.ndarray[Any, Any]:
    got = np.asarray(values)
    if got.ndim == 0 or got.shape[0] != rows:
        raise ValueError(f"answered {got.shape} for {rows} row(s)")
    return got


def _not_finite(got: np.ndarray[Any, Any]) -> str | None:
    if got.dtype.kind == "f" and not np.isfinite(got).all():
        return "ValueError: answered a value that is not finite"
    return None


def _alone(predictor: Predictor, x: np.ndarray[Any, Any]) -> Answered:
    """One copy's answer on its own, or its failure."""
    try:
        got = _checked(predictor.predict(x), len(x))
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"[:300]
    return got, _not_finite(got)


def _batches(items: list[ShadowCopy]) -> Iterator[list[ShadowCopy]]:
    """``items`` in runs of at most ``MAX_BATCH_ROWS`` rows (a larger copy on its own)."""
    batch: list[ShadowCopy] = []
    rows = 0
    for item in items:
        if batch and rows + len(item.x) > MAX_BATCH_ROWS:
            yield batch
            batch, rows = [], 0
        batch.append(item)
        rows += len(item.x)
    if batch:
        yield batch


def _json(a: np.ndarray[Any, Any]) -> str:
    """``json.dumps(a.tolist(), default=str)`` at a fraction of its cost for numbers: Python
    writes a list of integers and finite floats as JSON does (``repr`` of each), and only a
    float that is not finite (``nan``, ``inf``) puts an ``n`` in it."""
    if a.dtype.kind in "iuf":
        text = str(a.tolist())
        if "n" not in text:
            return text
    return json.dumps(a.tolist(), default=str)
