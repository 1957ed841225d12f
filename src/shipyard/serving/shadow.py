"""Shadow traffic: a copy of a share of the answered requests goes to a shadow version.

During a release's shadow stage the traffic split names a shadow version and a share
(:mod:`shipyard.serving.split`); every user is answered by the stable version as before. Once
the stable version's answer is written to the user (the app runs :meth:`ShadowCopies.offer` as
the request's after-response work, ``shipyard.serving.app.AFTER_RESPONSE``), ``offer`` hands a
copy of the request (its
input rows and the stable answer, as bytes) to the worker's **shadow helper**: a process of its
own (:mod:`shipyard.serving.shadow_helper`) that loads the shadow version through the
registry's loader, makes it predict the same rows, and writes the pairs (stable answer, shadow
answer or failure) to the **shadow log** (Parquet artifacts of kind ``serving_shadow_log``, read
back by :func:`shipyard.serving.records.shadow_pairs`).

Why a process: a thread in the worker shares the worker's GIL with the requests; measured with
every request shadowed, such a thread added 84 % to users' p99 latency at one client. The helper
runs at the lowest CPU priority (``SCHED_IDLE``, else ``nice 19``), so it uses only the CPU the
requests leave; under full load it falls behind and copies are dropped (and counted).

``offer`` does a lookup, a sum and an encoding of the copy (raw bytes for numbers, JSON
for anything else: no pickle crosses the channel) into the batch that gathers the copies of its
model, versions and row shapes (:class:`Gathering`): a few microseconds (5.8 µs measured in a
serving worker), the same for every copy, after the user has the answer: at one client the next
request is still on its way then; on a busy worker the next request waits that long. Every
``BATCH_AGE_S`` the copy that finds its batch that old sends the batch as one message,
without blocking, on a Unix ``SOCK_SEQPACKET`` socket pair (a join and one ``send``); when the
requests stop, a thread of the worker sends what they left. Why batches: the helper
then wakes, receives and decodes once for hundreds of copies, and measured with every request
shadowed at one client the cost to users' p99 went from +40 % to +60 % (a message a copy,
answered every 0.2 s) to +4 % to +14 % (with the helper's drain each second; see
docs/deployment.md).
Why not encode the batch at once when it is sent: that is a burst that holds the worker's GIL
for all of its copies together, which showed at p99 where the same work spread over the
requests did not. The socket's send buffer
(``capacity_bytes``) bounds what waits; a full buffer, a batch too large for it, or a helper
that is gone drop the batch's copies and count them: the user never waits for the shadow. The
helper is started on the first batch (the batches wait in the socket meanwhile), at the lowest
CPU priority from its first instant, by a thread of the worker that then reads the helper's
counts back; it dies with its worker (:class:`shipyard.supervision.ParentWatch`, as the
decoding helper), and one that dies first is started again, later each time.

Counted on the worker's ``/metrics`` as ``shipyard_http_shadow_copies_total{model, version,
outcome}`` (``answered``, ``failed``, ``dropped``; ``version`` is the shadow's): the worker counts
the copies it drops, the helper reports the ones it answered, failed, or dropped because it
could not load the shadow version.

The share is exact, not sampled: a running sum adds ``shadow_pct / 100`` per answered request
and copies one whenever it reaches 1, so 100 % copies every request and 25 % every fourth.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter

from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.metrics import SHADOW_COPIES

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from shipyard.artifacts import ArtifactStore
    from shipyard.serving.live import LiveModels, Loaded
    from shipyard.store import Store

log = logging.getLogger("shipyard.serving")

SHADOW_LOG_KIND = "serving_shadow_log"
SHADOW_LOG_MEDIA_TYPE = "application/vnd.apache.parquet"
MAX_ROWS_PER_COPY = 100
"""A copy keeps at most this many rows of a request (the judge pairs rows, not requests)."""
CAPACITY_BYTES = 1 << 20
"""The channel's send buffer: copies waiting for the helper take at most about this much."""
BATCH_AGE_S = 0.1
"""Copies gather this long in the worker before they are sent together, as one message."""
BATCH_BYTES = 64 << 10
"""A batch is sent at once when its copies reach this size (or a quarter of the channel)."""
RESTART_DELAY_S = (1.0, 60.0)
"""A helper that died is started again after the first delay, doubled each time up to the last."""


# -- the wire format: one message per batch of copies, no pickle ------------------------------


@dataclass(slots=True)
class ShadowCopy:
    """One answered request on its way to the shadow version."""

    model: str
    stable_version: int
    shadow_version: int
    request_id: str
    ts: float
    x: np.ndarray[Any, Any]
    stable_answer: np.ndarray[Any, Any]


@dataclass(slots=True)
class CopyBatch:
    """Copies of one model, stable and shadow version and row shape, one array a column: the
    rows of every copy one after the other (``rows[i]`` of them for copy ``i``)."""

    model: str
    stable_version: int
    shadow_version: int
    request_ids: list[str]
    ts: np.ndarray[Any, Any]
    rows: np.ndarray[Any, Any]
    x: np.ndarray[Any, Any]
    stable_answer: np.ndarray[Any, Any]

    def __len__(self) -> int:
        return len(self.request_ids)


_COUNT = struct.Struct("<I")
_HEADS_KEPT = 1024
"""Heads decoded are kept for reuse, this many at most (then forgotten at once)."""
_parsed: dict[bytes, tuple[str, int, int, Any, Any]] = {}


def _array_desc(a: np.ndarray[Any, Any]) -> tuple[Any, ...]:
    """How an array's rows travel: raw bytes (dtype, shape of a row) for numbers, JSON rows for
    anything else (with the shape of a row, checked when they arrive)."""
    if a.dtype.kind in "biuf" and a.dtype.byteorder in "<=|":
        return ("raw", a.dtype.str, a.shape[1:])
    return ("json", a.shape[1:])


def _array_of(desc: Any, data: memoryview, rows: int) -> np.ndarray[Any, Any]:
    if desc[0] == "raw":
        dtype, shape = desc[1], desc[2]
        got = np.frombuffer(data, dtype=dtype)
        if got.size != rows * math.prod(shape):
            raise ValueError(f"{got.size} values for {rows} row(s) of shape {shape}")
        return got.reshape((rows, *shape))
    values = json.loads(bytes(data))
    if not isinstance(values, list):
        raise ValueError("the rows are not a list")
    got = np.array(values, dtype=object) if values else np.empty((0, *desc[1]), dtype=object)
    if got.shape != (rows, *desc[1]):
        raise ValueError(f"rows of shape {got.shape[1:]} for {rows} row(s) of shape {desc[1]}")
    return got


def _desc_of(desc: Any) -> Any:
    """A decoded array description, checked: ("raw", dtype, row shape) or ("json", row shape)."""
    if desc[0] == "raw":
        try:
            dtype = np.dtype(str(desc[1]))
        except Exception as exc:  # NumPy raises SyntaxError for some strings, TypeError for others
            raise ValueError(f"not a dtype: {desc[1]!r} ({exc})") from None
        if dtype.kind not in "biuf":
            raise ValueError(f"not a number dtype: {desc[1]}")
        return ("raw", dtype, tuple(int(n) for n in desc[2]))
    if desc[0] == "json":
        return ("json", tuple(int(n) for n in desc[1]))
    raise ValueError(f"unknown array encoding {desc[0]!r}")


class Gathering:
    """Copies of one model, stable and shadow version and row shapes gathering into one message.

    Each copy is encoded as it is added (its rows as raw bytes for numbers, JSON for anything
    else), a few microseconds on the request path, the same for every copy; so :meth:`message`
    is a join, not a burst of work that would hold the worker's GIL for all of them at once.
    The message: a JSON head line (the model, its versions and how rows travel), the number of
    copies, their times, row counts and request id lengths, the request ids, the length of the
    rows' bytes, then every copy's rows and every copy's answer."""

    __slots__ = ("began", "head", "request_ids", "rid_lengths", "rows", "ts", "x_raw", "xs",
                 "y_raw", "ys")  # fmt: skip

    def __init__(self, copy: ShadowCopy, began: float) -> None:
        x_desc = _array_desc(copy.x)
        y_desc = _array_desc(np.asarray(copy.stable_answer))
        self.head = (
            json.dumps(
                [copy.model, copy.stable_version, copy.shadow_version, list(x_desc), list(y_desc)]
            ).encode()
            + b"\n"
        )
        self.x_raw, self.y_raw = x_desc[0] == "raw", y_desc[0] == "raw"
        self.began = began
        self.ts: list[float] = []
        self.rows: list[int] = []
        self.rid_lengths: list[int] = []
        self.request_ids: list[bytes] = []
        self.xs: list[bytes] = []
        self.ys: list[bytes] = []

    def __len__(self) -> int:
        return len(self.ts)

    def add(self, copy: ShadowCopy) -> int:
        """Add a copy (its first ``MAX_ROWS_PER_COPY`` rows); returns the bytes it takes."""
        x = copy.x[:MAX_ROWS_PER_COPY]
        y = np.asarray(copy.stable_answer)[:MAX_ROWS_PER_COPY]
        rid = copy.request_id.encode()
        x_bytes = x.tobytes() if self.x_raw else _json_rows(x)
        y_bytes = y.tobytes() if self.y_raw else _json_rows(y)
        self.ts.append(copy.ts)
        self.rows.append(len(x))
        self.rid_lengths.append(len(rid))
        self.request_ids.append(rid)
        self.xs.append(x_bytes)
        self.ys.append(y_bytes)
        return len(rid) + len(x_bytes) + len(y_bytes) + 16

    def message(self) -> bytes:
        x = b"".join(self.xs) if self.x_raw else b"[" + b",".join(filter(None, self.xs)) + b"]"
        y = b"".join(self.ys) if self.y_raw else b"[" + b",".join(filter(None, self.ys)) + b"]"
        return b"".join((
            self.head, _COUNT.pack(len(self.ts)),
            np.array(self.ts, dtype="<f8").tobytes(),
            np.array(self.rows, dtype="<u4").tobytes(),
            np.array(self.rid_lengths, dtype="<u4").tobytes(),
            *self.request_ids, _COUNT.pack(len(x)), x, y,
        ))  # fmt: skip


def _json_rows(a: np.ndarray[Any, Any]) -> bytes:
    """An array's rows as JSON without the enclosing brackets (so copies join with commas)."""
    return json.dumps(a.tolist(), default=str)[1:-1].encode()


def encode_batch(copies: list[ShadowCopy]) -> bytes:
    """Copies of one model, versions and row shapes as one message (:class:`Gathering`)."""
    gathering = Gathering(copies[0], 0.0)
    for copy in copies:
        gathering.add(copy)
    return gathering.message()


def decode_batch(message: bytes) -> CopyBatch:
    """The copies a message carries. Raises ``ValueError`` on a malformed one."""
    view = memoryview(message)
    head_end = message.find(b"\n") + 1
    if head_end == 0:
        raise ValueError("no head line")
    head = message[:head_end]
    parsed = _parsed.get(head)
    if parsed is None:
        try:
            model, stable, shadow, x_desc, y_desc = json.loads(head)
            parsed = (str(model), int(stable), int(shadow), _desc_of(x_desc), _desc_of(y_desc))
        except (TypeError, IndexError, KeyError) as exc:
            raise ValueError(f"malformed head: {exc}") from None
        if len(_parsed) >= _HEADS_KEPT:
            _parsed.clear()
        _parsed[head] = parsed
    model, stable, shadow, x_desc, y_desc = parsed
    try:
        (n,) = _COUNT.unpack_from(view, head_end)
        at = head_end + _COUNT.size
        ts = np.frombuffer(view, dtype="<f8", count=n, offset=at)
        rows = np.frombuffer(view, dtype="<u4", count=n, offset=at + 8 * n).astype(np.intp)
        rid_lengths = np.frombuffer(view, dtype="<u4", count=n, offset=at + 12 * n)
        at += 16 * n
        rid_end = at + int(rid_lengths.sum(dtype=np.int64))
        rid_bytes = bytes(view[at:rid_end])
        (x_len,) = _COUNT.unpack_from(view, rid_end)
    except struct.error as exc:
        raise ValueError(str(exc)) from None
    if len(rid_bytes) != rid_end - at:
        raise ValueError("the request ids run past the message")
    cuts = [0, *np.cumsum(rid_lengths, dtype=np.int64).tolist()]
    request_ids = [rid_bytes[a:b].decode() for a, b in itertools.pairwise(cuts)]
    x_at = rid_end + _COUNT.size
    if x_at + x_len > len(view):
        raise ValueError("the rows run past the message")
    total = int(rows.sum())
    x = _array_of(x_desc, view[x_at : x_at + x_len], total)
    y = _array_of(y_desc, view[x_at + x_len :], total)
    return CopyBatch(model, stable, shadow, request_ids, ts, rows, x, y)


def encode_counts(counts: dict[tuple[str, int, str], int]) -> bytes:
    """The helper's report: copies by (model, shadow version, outcome) since the last one."""
    return json.dumps([[m, v, o, n] for (m, v, o), n in counts.items()]).encode()


def decode_counts(message: bytes) -> list[tuple[str, str, str, int]]:
    return [(str(m), str(v), str(o), int(n)) for m, v, o, n in json.loads(message)]


# -- the worker's side -------------------------------------------------------------------------


class _Channel:
    """The worker's end of one socket pair to the helper, and the helper's end until it starts."""

    def __init__(self, capacity_bytes: int) -> None:
        self.near, self.far = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.near.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, capacity_bytes)

    def send_nowait(self, message: bytes) -> bool:
        """Whether the message went; never blocks."""
        try:
            self.near.send(message, socket.MSG_DONTWAIT)
        except OSError:  # full, too large for the buffer, or the helper is gone
            return False
        return True

    def close(self) -> None:
        for end in (self.near, self.far):
            end.close()


class ShadowCopies:
    """Offers copies to the worker's shadow helper process and counts them.

    ``capacity_bytes`` bounds the copies waiting for the helper; ``store`` and ``artifacts``
    receive the shadow log (none: the copies are answered and counted, not logged). The shadow
    version is loaded in the helper from ``live.registry``'s store and artifacts."""

    def __init__(
        self,
        live: LiveModels,
        registry: CollectorRegistry,
        store: Store | None,
        artifacts: ArtifactStore | None,
        *,
        capacity_bytes: int = CAPACITY_BYTES,
        flush_interval_s: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if capacity_bytes < 1:
            raise ValueError("capacity_bytes must be ≥ 1")
        self.live = live
        self.store = store
        self.artifacts = artifacts
        self.capacity_bytes = capacity_bytes
        self.flush_interval_s = flush_interval_s
        self.clock = clock
        self.copies = Counter(
            SHADOW_COPIES.name, SHADOW_COPIES.help, SHADOW_COPIES.labels, registry=registry
        )
        self._tick: dict[str, float] = {}
        self._pending: dict[tuple[Any, ...], Gathering] = {}
        self._pending_bytes = 0
        self._gathering = threading.Event()  # set while copies wait to be sent
        self._pending_lock = threading.Lock()
        self._channel: _Channel | None = None
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._sender: threading.Thread | None = None
        self.process: BaseProcess | None = None
        """The helper process while it runs."""

    # -- the request path: a lookup, a sum, an encoding and now and then a send ----------------
    def offer(
        self,
        loaded: Loaded,
        x: np.ndarray[Any, Any],
        predictions: np.ndarray[Any, Any],
        request_id: str,
    ) -> None:
        """After ``loaded`` answered a request: copy it to the model's shadow when the share
        says so. Never raises and never blocks."""
        route = self.live.routes.get(loaded.model)
        if route is None or route.shadow is None or route.shadow.version == loaded.version:
            return
        if loaded.version == route.canary:
            return  # the shadow is judged against the stable version's answers only
        model = loaded.model
        tick = self._tick.get(model, 0.0) + route.shadow_pct / 100.0
        if tick < 1.0 - 1e-9:
            self._tick[model] = tick
            return
        self._tick[model] = tick - 1.0
        copy = ShadowCopy(
            model, loaded.version, route.shadow.version, request_id, self.clock.time(), x,
            predictions,
        )  # fmt: skip
        now = time.monotonic()
        try:
            key = (model, loaded.version, copy.shadow_version, x.dtype, x.shape[1:],
                   predictions.dtype, predictions.shape[1:])  # fmt: skip
            with self._pending_lock:
                gathering = self._pending.get(key)
                if gathering is None:
                    gathering = self._pending[key] = Gathering(copy, now)
                self._pending_bytes += gathering.add(copy)
                due = (
                    now - gathering.began >= BATCH_AGE_S
                    or self._pending_bytes >= self._batch_bytes()
                )
        except Exception as exc:  # the shadow must never fail a user's request
            log.warning("shadow copy of request %s not sent: %s", request_id, exc)
            self.copies.labels(model, str(copy.shadow_version), "dropped").inc()
            return
        if due:
            self._send_pending()  # one send for the copies of the last BATCH_AGE_S
        elif not self._gathering.is_set():
            self._gathering.set()

    def _batch_bytes(self) -> int:
        """The most a batch holds: a quarter of the channel, so that one always fits."""
        return max(1, min(BATCH_BYTES, self.capacity_bytes // 4))

    def _send_pending(self) -> None:
        """Send the copies that wait, one message per model, versions and row shapes; a batch
        the channel cannot take is dropped and counted."""
        with self._pending_lock:
            pending, self._pending, self._pending_bytes = self._pending, {}, 0
            self._gathering.clear()
        for key, gathering in pending.items():
            try:
                channel = self._channel or self._open()
                sent = channel is not None and channel.send_nowait(gathering.message())
            except Exception as exc:
                log.warning("%d shadow copies not sent: %s", len(gathering), exc)
                sent = False
            if not sent:
                self.copies.labels(key[0], str(key[2]), "dropped").inc(len(gathering))

    def _sweep(self) -> None:
        """Send copies that the requests left waiting: under traffic the request path sends them
        (each ``BATCH_AGE_S``), so this thread wakes, finds them young and sleeps again; when
        the traffic stops it sends the last of them."""
        while not self._stopping.is_set():
            self._gathering.wait()
            if self._stopping.wait(2 * BATCH_AGE_S):
                return
            with self._pending_lock:
                oldest = min((g.began for g in self._pending.values()), default=None)
            if oldest is not None and time.monotonic() - oldest >= BATCH_AGE_S:
                self._send_pending()

    def _open(self) -> _Channel | None:
        """The channel, made on the first copy (its helper starts in the background)."""
        with self._lock:
            if self._channel is None and self._thread is not None and not self._stopping.is_set():
                self._channel = _Channel(self.capacity_bytes)
                self._wanted.set()
            return self._channel

    # -- the helper's keeper: starts it, reads its counts, starts it again if it dies ------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._keep, name="shipyard-shadow", daemon=True)
        self._thread.start()
        self._sender = threading.Thread(
            target=self._sweep, name="shipyard-shadow-sweeper", daemon=True
        )
        self._sender.start()

    def _keep(self) -> None:
        delay_s, longest_s = RESTART_DELAY_S
        while True:
            self._wanted.wait()
            if self._stopping.is_set():
                return
            channel = self._channel
            assert channel is not None
            try:
                self.process = self._spawn(channel.far)
            except Exception as exc:
                log.error("the shadow helper process could not start: %s", exc)
            else:
                channel.far.close()  # the helper holds its own: its death is our end of file
                self._read_counts(channel.near)
                self.process.join(timeout=10)
                if self.process.is_alive():
                    self.process.kill()
                    self.process.join(timeout=5)
            with self._lock:
                self._channel = None
                self._wanted.clear()
            channel.close()
            if self._stopping.wait(0 if self._stopping.is_set() else delay_s):
                return
            log.warning("the shadow helper process ended; a new one starts on the next copy")
            delay_s = min(2 * delay_s, longest_s)

    def _spawn(self, far: socket.socket) -> BaseProcess:
        from shipyard.serving.shadow_helper import HelperSetup, lowest_priority, run_helper

        registry = self.live.registry
        setup = HelperSetup(
            parent_pid=os.getpid(),
            registry_db_url=registry.store.url,
            registry_artifact_url=registry.artifacts.root,
            log_db_url=self.store.url if self.store is not None else None,
            log_artifact_url=self.artifacts.root if self.artifacts is not None else None,
            flush_interval_s=self.flush_interval_s,
        )
        process = multiprocessing.get_context("spawn").Process(
            target=run_helper, args=(far, setup), name="shipyard-shadow-helper", daemon=True
        )
        process.start()
        assert process.pid is not None
        lowest_priority(process.pid)  # its start-up too takes only the CPU the requests leave
        return process

    def _read_counts(self, near: socket.socket) -> None:
        """The helper's reports, until it closes its end (it ended or died)."""
        while True:
            try:
                message = near.recv(1 << 16)
            except OSError:
                return
            if not message:
                return
            try:
                for model, version, outcome, n in decode_counts(message):
                    self.copies.labels(model, version, outcome).inc(n)
            except (ValueError, TypeError) as exc:
                log.error("unreadable report from the shadow helper: %s", exc)

    def stop(self) -> None:
        """Let the helper answer what waits and write the last of its log, then end it."""
        if self._thread is None:
            return
        self._stopping.set()
        self._gathering.set()
        if self._sender is not None:
            self._sender.join(timeout=5)
            self._sender = None
        self._send_pending()  # the copies still waiting go before the end of the channel
        with self._lock:
            self._wanted.set()
            if self._channel is not None:
                with contextlib.suppress(OSError):  # the helper reads to the end, then ends
                    self._channel.near.shutdown(socket.SHUT_WR)
        self._thread.join(timeout=15)
        self._thread = None
