"""Shadow traffic: a copy of a share of the answered requests goes to a shadow version.

During a release's shadow stage the traffic split names a shadow version and a share
(:mod:`shipyard.serving.split`); every user is answered by the stable version as before. After
the stable version has answered, :meth:`ShadowCopies.offer` hands a copy of the request (its
input rows and the stable answer, as bytes) to the worker's **shadow helper**: a process of its
own (:mod:`shipyard.serving.shadow_helper`) that loads the shadow version through the
registry's loader, makes it predict the same rows, and writes the pairs (stable answer, shadow
answer or failure) to the **shadow log** (Parquet artifacts of kind ``serving_shadow_log``, read
back by :func:`shipyard.serving.records.shadow_pairs`).

Why a process: a thread in the worker shares the worker's GIL with the requests; measured with
every request shadowed, such a thread added 84 % to users' p99 latency at one client. The helper
runs at the lowest CPU priority (``SCHED_IDLE``, else ``nice 19``), so it uses only the CPU the
requests leave; under full load it falls behind and copies are dropped (and counted).

The request path does a lookup, a sum, an encoding of the rows (raw bytes for numbers, JSON
for anything else: no pickle crosses the channel; the head that names the model, versions and
row shape is encoded once and reused) and one non-blocking ``send`` on a Unix
``SOCK_SEQPACKET`` socket pair: each copy is one message, and the socket's send buffer
(``capacity_bytes``) bounds what waits. A full buffer, a copy too large for it, or a helper that
is gone drop the copy and count it: the user never waits for the shadow. The helper is started
on the first copy (the copies wait in the socket meanwhile) by a thread of the worker that then
reads the helper's counts back; it dies with its worker (:class:`shipyard.supervision.ParentWatch`,
as the decoding helper), and one that dies first is started again, later each time.

Counted on the worker's ``/metrics`` as ``shipyard_http_shadow_copies_total{model, version,
outcome}`` (``answered``, ``failed``, ``dropped``; ``version`` is the shadow's): the worker counts
the copies it drops, the helper reports the ones it answered, failed, or dropped because it
could not load the shadow version.

The share is exact, not sampled: a running sum adds ``shadow_pct / 100`` per answered request
and copies one whenever it reaches 1, so 100 % copies every request and 25 % every fourth.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import socket
import struct
import threading
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
RESTART_DELAY_S = (1.0, 60.0)
"""A helper that died is started again after the first delay, doubled each time up to the last."""


# -- the wire format: one message per copy, no pickle ------------------------------------------


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


_TAIL = struct.Struct("<dII")
"""What changes from copy to copy: its time, the lengths of its request id and of its rows."""
_HEADS_KEPT = 1024
"""Heads encoded or decoded are kept for reuse, this many at most (then forgotten at once)."""
_heads: dict[tuple[Any, ...], bytes] = {}
_parsed: dict[bytes, tuple[str, int, int, Any, Any]] = {}


def _array_desc(a: np.ndarray[Any, Any]) -> tuple[Any, ...]:
    """How an array travels: raw bytes (dtype, shape) for numbers, JSON rows for anything else."""
    if a.dtype.kind in "biuf" and a.dtype.byteorder in "<=|":
        return ("raw", a.dtype.str, a.shape)
    return ("json",)


def _array_bytes(a: np.ndarray[Any, Any], desc: tuple[Any, ...]) -> bytes:
    if desc[0] == "raw":
        return np.ascontiguousarray(a).tobytes()
    return json.dumps(a.tolist(), default=str).encode()


def _array_of(desc: Any, data: memoryview) -> np.ndarray[Any, Any]:
    if desc[0] == "raw":
        dtype, shape = desc[1], desc[2]
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    return np.array(json.loads(bytes(data)), dtype=object)


def _desc_of(desc: Any) -> Any:
    """A decoded array description, checked: ("raw", dtype, shape) or ("json",)."""
    if desc[0] == "raw":
        dtype = np.dtype(str(desc[1]))
        if dtype.kind not in "biuf":
            raise ValueError(f"not a number dtype: {desc[1]}")
        return ("raw", dtype, tuple(int(n) for n in desc[2]))
    if desc[0] == "json":
        return ("json",)
    raise ValueError(f"unknown array encoding {desc[0]!r}")


def encode_copy(copy: ShadowCopy) -> bytes:
    """One copy as one message: a JSON head line (what is the same from copy to copy of a model,
    its versions and its row shape, so it is encoded once and reused), then the copy's time,
    request id, rows and answer (raw bytes for numbers, JSON for anything else)."""
    x = copy.x[:MAX_ROWS_PER_COPY]
    y = np.asarray(copy.stable_answer)[:MAX_ROWS_PER_COPY]
    x_desc, y_desc = _array_desc(x), _array_desc(y)
    key = (copy.model, copy.stable_version, copy.shadow_version, x_desc, y_desc)
    head = _heads.get(key)
    if head is None:
        if len(_heads) >= _HEADS_KEPT:
            _heads.clear()
        head = _heads[key] = json.dumps([*key[:3], list(x_desc), list(y_desc)]).encode() + b"\n"
    rid = copy.request_id.encode()
    x_bytes = _array_bytes(x, x_desc)
    tail = _TAIL.pack(copy.ts, len(rid), len(x_bytes))
    return b"".join((head, tail, rid, x_bytes, _array_bytes(y, y_desc)))


def decode_copy(message: bytes) -> ShadowCopy:
    """The copy a message carries. Raises ``ValueError`` on a malformed one."""
    head_end = message.index(b"\n") + 1
    head = message[:head_end]
    parsed = _parsed.get(head)
    if parsed is None:
        model, stable, shadow, x_desc, y_desc = json.loads(head)
        parsed = (str(model), int(stable), int(shadow), _desc_of(x_desc), _desc_of(y_desc))
        if len(_parsed) >= _HEADS_KEPT:
            _parsed.clear()
        _parsed[head] = parsed
    model, stable, shadow, x_desc, y_desc = parsed
    try:
        ts, rid_len, x_len = _TAIL.unpack_from(message, head_end)
    except struct.error as exc:
        raise ValueError(str(exc)) from None
    body = memoryview(message)[head_end + _TAIL.size :]
    return ShadowCopy(
        model,
        stable,
        shadow,
        bytes(body[:rid_len]).decode(),
        ts,
        _array_of(x_desc, body[rid_len : rid_len + x_len]),
        _array_of(y_desc, body[rid_len + x_len :]),
    )


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
        self._channel: _Channel | None = None
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.process: BaseProcess | None = None
        """The helper process while it runs."""

    # -- the request path: a lookup, a sum, an encoding and a non-blocking send ------------------
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
        shadow = route.shadow.version
        try:
            message = encode_copy(
                ShadowCopy(
                    model, loaded.version, shadow, request_id, self.clock.time(), x, predictions
                )
            )
            channel = self._channel or self._open()
            sent = channel is not None and channel.send_nowait(message)
        except Exception as exc:  # the shadow must never fail a user's request
            log.warning("shadow copy of request %s not sent: %s", request_id, exc)
            sent = False
        if not sent:
            self.copies.labels(model, str(shadow), "dropped").inc()

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
        self._thread = threading.Thread(target=self._keep, name="shipyard-shadow", daemon=True)
        self._thread.start()

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
        from shipyard.serving.shadow_helper import HelperSetup, run_helper

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
        with self._lock:
            self._stopping.set()
            self._wanted.set()
            if self._channel is not None:
                with contextlib.suppress(OSError):  # the helper reads to the end, then ends
                    self._channel.near.shutdown(socket.SHUT_WR)
        self._thread.join(timeout=15)
        self._thread = None
