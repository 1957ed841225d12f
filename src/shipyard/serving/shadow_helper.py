"""The shadow helper: one process per model-server worker that answers its shadow copies.

Started by the worker's :class:`shipyard.serving.shadow.ShadowCopies` on the first copy, with
its end of a ``SOCK_SEQPACKET`` socket pair. It:

* ends with its worker: a :class:`shipyard.supervision.ParentWatch` (the parent-death signal,
  with a watch on the parent's pid behind it, as the decoding helper), and the end of file on
  its socket when the worker closes its end;
* runs at the lowest CPU priority there is from its start (:func:`lowest_priority`, set by its
  worker as soon as the process exists: its start-up, a second or more of imports and loading,
  would otherwise take CPU from the requests), so that it only takes the CPU the requests
  leave: on a machine kept busy it starts and answers late, or the channel fills and copies
  are dropped;
* loads each shadow version with :meth:`shipyard.registry.Registry.load` (the digest check and
  the pickle rule of any model the server loads) and runs nothing else that came from outside:
  copies arrive as JSON and raw numbers (:func:`shipyard.serving.shadow.decode_batch`);
* wakes at most ``1 / DRAIN_INTERVAL_S`` times a second, not once a copy: after a batch wakes
  it (or after the last drain found batches) it sleeps ``DRAIN_INTERVAL_S`` (or until its next
  flush interval) while batches gather in the socket, then drains the socket and answers all
  their copies with one ``predict`` per shadow version and row shape (``MAX_BATCH_ROWS`` rows
  a call at most), each copy on its own where that fails (so a failure is the copy's own), and
  works column by column, not copy by copy (a copy whose answer is not finite is found with
  one ``reduceat``; the shadow log's columns of rows and answers are Arrow lists made from the
  arrays at once, JSON text made with one ``tolist`` only for what is not numbers: 0.6 µs a
  copy where JSON text for everything took 4.3). The same answers as one request
  at a time for any model that answers each row on its own (every flavor Shipyard serves).
  With no copies it blocks until one arrives;
* reports its counts (answered, failed, and dropped when the shadow version cannot load here)
  to the worker every ``flush_interval_s`` (each report wakes a thread of the worker, which
  takes its GIL), and writes the pairs to the shadow log (one Parquet artifact per model,
  stable and shadow version, and per ``LOG_COLUMNS`` schema: the file first, then one short
  transaction; dated by its last copy on the worker's clock, :class:`CopiesClock`) as often
  while fewer than ``BUSY_PAIRS`` wait, else every ``BUSY_LOG_INTERVAL_S``: a file and a
  transaction cost about 4 ms of CPU whether they hold a hundred pairs or thousands.
"""

from __future__ import annotations

import contextlib
import io
import itertools
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
    CopyBatch,
    decode_batch,
    encode_counts,
)

if TYPE_CHECKING:
    from shipyard.artifacts import ArtifactStore
    from shipyard.registry import Registry
    from shipyard.registry.flavors import Predictor
    from shipyard.store import Store

log = logging.getLogger("shipyard.serving")

DRAIN_INTERVAL_S = 1.0
"""The helper drains its socket at most this often: the batches that arrive meanwhile wait in
the socket (the worker's ``CAPACITY_BYTES``, where ``net.core.wmem_max`` allows it, holds
about ten thousand one-row copies) and are answered together, one wake-up for all of them.
Measured at one client with every request shadowed, draining each second instead of each
0.2 s took the cost to users' p99 from +21 % to +4 % to +14 % (fewer times the helper holds
a core that a request then wakes onto)."""
MAX_BATCH_ROWS = 2048
"""The rows of one ``predict`` call, at most."""
MAX_MESSAGE_BYTES = 8 << 20
"""A copy larger than this is dropped (the worker's send buffer is far smaller anyway)."""
BUSY_PAIRS = 1000
"""More pairs than this waiting at a flush interval: the helper is busy, and writes its log
each ``BUSY_LOG_INTERVAL_S`` instead (fewer files and transactions, the same pairs)."""
BUSY_LOG_INTERVAL_S = 5.0
MAX_PAIRS_WAITING = 50_000
"""Pairs are written at once when this many wait, whatever the interval."""
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


LOG_COLUMNS = ("request_id", "ts", "request", "stable", "shadow", "error", "shadow_ms")
"""A shadow-log row: one copy. Its rows, its stable and its shadow answer are Arrow lists built
from the arrays at once (no Python object a copy) when they are numbers, JSON text otherwise,
as :func:`shipyard.serving.records.shadow_pairs` reads either; so a run of numbers and a run
of JSON text go to files of their own."""


def _rows_column(a: np.ndarray[Any, Any], cuts: list[int], failed: list[bool] | None = None) -> Any:
    """Each copy's rows of ``a`` (rows ``cuts[i]:cuts[i + 1]``), null where ``failed``: an Arrow
    list of the rows (fixed-size lists for a row of many values) for numbers, JSON text (as
    :func:`_json` writes it) for anything else."""
    import pyarrow as pa

    if a.dtype.kind in "biuf" and 0 not in a.shape[1:]:
        a = np.ascontiguousarray(a, np.float32 if a.dtype == np.float16 else None)
        if not a.dtype.isnative:
            a = a.astype(a.dtype.newbyteorder("="))
        values = pa.array(a.reshape(-1))
        for size in reversed(a.shape[1:]):
            values = pa.FixedSizeListArray.from_arrays(values, size)
        mask = None if failed is None or not any(failed) else pa.array(failed, pa.bool_())
        return pa.ListArray.from_arrays(pa.array(cuts, pa.int32()), values, mask=mask)
    texts: list[str | None] = list(_json_by_copy(a, cuts))
    if failed is not None:
        texts = [None if bad else text for text, bad in zip(texts, failed, strict=True)]
    return pa.array(texts, pa.string())


def _alone_column(answers: list[np.ndarray[Any, Any] | None], failed: list[bool]) -> Any:
    """The answers of copies answered one by one (None: it failed) as :func:`_rows_column`."""
    import pyarrow as pa

    good = [a for a, bad in zip(answers, failed, strict=True) if not bad and a is not None]
    if good and all(
        a.dtype.kind in "biuf" and a.dtype == good[0].dtype and a.shape[1:] == good[0].shape[1:]
        for a in good
    ):
        cuts = [0]
        for a, bad in zip(answers, failed, strict=True):
            cuts.append(cuts[-1] + (0 if bad or a is None else len(a)))
        return _rows_column(np.concatenate(good), cuts, failed)
    texts = [None if bad or a is None else _json(a) for a, bad in zip(answers, failed, strict=True)]
    return pa.array(texts, pa.string())


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


def lowest_priority(pid: int | None = None) -> str:
    """Put a process (None: this one) at the lowest CPU priority allowed: ``SCHED_IDLE`` (runs
    only on a CPU nothing else wants, see sched(7)), else ``nice 19``. Returns which one it got.

    Linux applies a policy to one thread, and a new thread takes its creator's; so every thread
    there is now (a math library's pool started at import, say) is set, and those started later
    follow."""
    try:
        threads = [int(tid) for tid in os.listdir(f"/proc/{pid or 'self'}/task")]
    except OSError:
        threads = [pid or 0]
    try:
        for tid in threads:
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        pass
    else:
        return "SCHED_IDLE"
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid or 0, 19)
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
    lowest_priority()  # its worker set it at its start; the threads started since follow
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
        self._batch: dict[tuple[str, int, int], list[Any]] = {}
        """The shadow log's pairs waiting for the next flush, by (model, stable, shadow): an Arrow
        table a run of copies answered together."""
        self._counts: dict[tuple[str, int, str], int] = {}
        self._written_at = time.monotonic()

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
            for run in _runs(items):
                try:
                    self._answer(run)
                except Exception as exc:  # one bad run must not end the helper
                    copies = sum(map(len, run))
                    log.error("shadow copies of %d request(s) failed: %s", copies, exc)
            now = time.monotonic()
            if ended or now >= next_flush:
                if ended or self._log_due(now):
                    self._flush_safely()
                    self._written_at = now
                self._report()  # once a flush interval: each report wakes a thread of the worker
                next_flush = now + self.flush_interval_s

    def _log_due(self, now: float) -> bool:
        """Whether the pairs that wait go to the shadow log now: each flush interval while
        they are few, each ``BUSY_LOG_INTERVAL_S`` while they are many (a file and a
        transaction cost the same for a hundred pairs as for thousands)."""
        waiting = sum(t.num_rows for tables in self._batch.values() for t in tables)
        return (
            waiting < BUSY_PAIRS
            or waiting >= MAX_PAIRS_WAITING
            or now - self._written_at >= BUSY_LOG_INTERVAL_S
        )

    def _receive(self, flags: int) -> CopyBatch | object | None:
        """The next batch; ``_END`` at the end of file; None for a message that is not one."""
        try:
            n = self.sock.recv_into(self._buffer, 0, flags | socket.MSG_TRUNC)
        except (ConnectionError, OSError) as exc:
            if isinstance(exc, BlockingIOError):
                raise
            return _END
        if n == 0:
            return _END
        if n > len(self._buffer):
            log.error("a batch of shadow copies of %d bytes is too large; dropped", n)
            return None
        try:
            return decode_batch(bytes(self._buffer[:n]))
        except (ValueError, TypeError, KeyError) as exc:
            log.error("unreadable batch of shadow copies: %s", exc)
            return None

    def _drain(self) -> tuple[list[CopyBatch], bool]:
        """Every batch waiting in the socket; whether the worker closed its end."""
        items: list[CopyBatch] = []
        while True:
            try:
                item = self._receive(socket.MSG_DONTWAIT)
            except BlockingIOError:
                return items, False
            if item is _END:
                return items, True
            if isinstance(item, CopyBatch):
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

    def _answer(self, run: list[CopyBatch]) -> None:
        """The shadow's answers to batches of one model, shadow version and row shape: one
        predict of all their rows; each copy on its own where that fails, so that a failure is
        the copy's."""
        first = run[0]
        predictor = self._predictor(first.model, first.shadow_version)
        copies = sum(map(len, run))
        if predictor is None:
            self._count(first.model, first.shadow_version, "dropped", copies)
            return
        x = np.concatenate([b.x for b in run]) if len(run) > 1 else first.x
        rows = np.concatenate([b.rows for b in run]) if len(run) > 1 else first.rows
        cuts = [0, *np.cumsum(rows, dtype=np.int64).tolist()]
        began = time.perf_counter()
        try:
            got = _checked(predictor.predict(x), len(x))
            errors = _not_finite_by_copy(got, rows)
            answers: list[np.ndarray[Any, Any] | None] | None = None
        except Exception:
            alone = [_alone(predictor, x[lo:hi]) for lo, hi in itertools.pairwise(cuts)]
            answers = [answer for answer, _ in alone]
            errors = [error for _, error in alone]
        took_ms = (time.perf_counter() - began) * 1000.0 / copies
        failed = sum(error is not None for error in errors)
        self._count(first.model, first.shadow_version, "failed", failed)
        self._count(first.model, first.shadow_version, "answered", copies - failed)
        if self.artifacts is None:
            return
        bad = [error is not None for error in errors]
        shadow = _rows_column(got, cuts, bad) if answers is None else _alone_column(answers, bad)
        self._record(run, x, cuts, shadow, errors, took_ms)

    def _count(self, model: str, version: int, outcome: str, n: int) -> None:
        if n:
            key = (model, version, outcome)
            self._counts[key] = self._counts.get(key, 0) + n

    def _record(
        self,
        run: list[CopyBatch],
        x: np.ndarray[Any, Any],
        cuts: list[int],
        shadow: Any,
        errors: list[str | None],
        took_ms: float,
    ) -> None:
        """The pairs of a run into the next flush (copy ``i``'s rows are
        ``cuts[i]:cuts[i + 1]``; ``shadow`` is the Arrow column of their answers)."""
        import pyarrow as pa

        first = run[0]
        key = (first.model, first.stable_version, first.shadow_version)
        stable = [b.stable_answer for b in run]
        ts = np.concatenate([b.ts for b in run]) if len(run) > 1 else first.ts
        columns = (
            pa.array([rid for b in run for rid in b.request_ids], pa.string()),
            pa.array(ts, pa.float64()),
            _rows_column(x, cuts),
            _rows_column(np.concatenate(stable) if len(stable) > 1 else stable[0], cuts),
            shadow,
            pa.array(errors, pa.string()),
            pa.array([took_ms if math.isfinite(took_ms) else None] * len(ts), pa.float64()),
        )
        table = pa.Table.from_arrays(list(columns), names=list(LOG_COLUMNS))
        self._batch.setdefault(key, []).append(table)

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
        """Write every waiting batch as one artifact per (model, stable, shadow) and schema, each
        gone from the batch once written (a flush that fails halfway writes none twice);
        returns the pairs written."""
        if self.artifacts is None or not self._batch:
            return 0
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        written = 0
        for key in list(self._batch):
            model, stable, shadow = key
            while self._batch[key]:  # a file a schema, each gone from the batch once written
                schema = self._batch[key][0].schema
                table = pa.concat_tables(t for t in self._batch[key] if t.schema == schema)
                if isinstance(self.artifacts.clock, CopiesClock):
                    self.artifacts.clock.now = pc.max(table.column("ts")).as_py()
                buf = io.BytesIO()
                pq.write_table(table, buf)
                self.artifacts.put_bytes(
                    buf.getvalue(),
                    SHADOW_LOG_MEDIA_TYPE,
                    {
                        "kind": SHADOW_LOG_KIND,
                        "model": model,
                        "version": shadow,
                        "stable_version": stable,
                        "rows": table.num_rows,
                        "first_ts": pc.min(table.column("ts")).as_py(),
                    },
                )
                self._batch[key] = [t for t in self._batch[key] if t.schema != schema]
                written += table.num_rows
            del self._batch[key]
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
        return NOT_FINITE
    return None


NOT_FINITE = "ValueError: answered a value that is not finite"


def _not_finite_by_copy(got: np.ndarray[Any, Any], rows: np.ndarray[Any, Any]) -> list[str | None]:
    """Each copy's failure for answering a value that is not finite (``rows[i]`` answers of
    ``got`` are copy ``i``'s), or None."""
    if got.dtype.kind != "f" or np.isfinite(got).all():
        return [None] * len(rows)
    finite = np.isfinite(got).reshape(len(got), -1).all(axis=1)
    bad = np.add.reduceat(~finite, np.cumsum(rows) - rows) if len(finite) else finite
    bad = np.where(rows > 0, bad, 0)  # reduceat gives an empty copy its next row's value
    return [NOT_FINITE if b else None for b in bad.tolist()]


def _alone(predictor: Predictor, x: np.ndarray[Any, Any]) -> Answered:
    """One copy's answer on its own, or its failure."""
    try:
        got = _checked(predictor.predict(x), len(x))
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"[:300]
    return got, _not_finite(got)


def _runs(items: list[CopyBatch]) -> Iterator[list[CopyBatch]]:
    """``items`` grouped by model, versions and row shapes, in runs of at most
    ``MAX_BATCH_ROWS`` rows (a larger batch on its own): one predict each."""
    groups: dict[tuple[Any, ...], list[CopyBatch]] = {}
    for item in items:
        y = item.stable_answer
        key = (item.model, item.stable_version, item.shadow_version, item.x.dtype.str,
               item.x.shape[1:], y.dtype.str, y.shape[1:])  # fmt: skip
        groups.setdefault(key, []).append(item)
    for group in groups.values():
        run: list[CopyBatch] = []
        rows = 0
        for item in group:
            if run and rows + len(item.x) > MAX_BATCH_ROWS:
                yield run
                run, rows = [], 0
            run.append(item)
            rows += len(item.x)
        if run:
            yield run


def _json_by_copy(a: np.ndarray[Any, Any], cuts: list[int]) -> list[str]:
    """Each copy's part of ``a`` (rows ``cuts[i]:cuts[i + 1]``) as JSON, as :func:`_json`
    writes it, with one ``tolist`` for all of them."""
    values = a.tolist()
    parts = [values[lo:hi] for lo, hi in itertools.pairwise(cuts)]
    if a.dtype.kind in "iuf":
        texts = [str(part) for part in parts]
        return [t if "n" not in t else json.dumps(p) for t, p in zip(texts, parts, strict=True)]
    return [json.dumps(part, default=str) for part in parts]


def _json(a: np.ndarray[Any, Any]) -> str:
    """``json.dumps(a.tolist(), default=str)`` at a fraction of its cost for numbers: Python
    writes a list of integers and finite floats as JSON does (``repr`` of each), and only a
    float that is not finite (``nan``, ``inf``) puts an ``n`` in it."""
    if a.dtype.kind in "iuf":
        text = str(a.tolist())
        if "n" not in text:
            return text
    return json.dumps(a.tolist(), default=str)
