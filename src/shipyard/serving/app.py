"""The model server's HTTP face: a lean ASGI application.

Written against the bare ASGI interface rather than a framework router: a one-row prediction is
a few hundred microseconds of work, and a framework's routing, request objects and dependency
injection would cost as much again (see ``benchmarks/serving.py``). The event loop reads
requests and writes answers; parsing, the model and encoding run on a bounded pool of threads
(:mod:`shipyard.serving.execution`), so probes, ``/metrics`` and other clients are answered
while a large request is predicted, and a full pool answers 503 with ``Retry-After`` instead of
queueing; small requests to a version measured cheap run on the loop itself while the pool is
idle, which saves the hop (:class:`~shipyard.serving.execution.InlineGate`). Every request is
held to its model version's cost bound (:mod:`shipyard.serving.limits`) before anything is built
from it; the body's declared length is checked before the body is read.

Class probabilities, which confidence-based performance estimation needs, are computed for a
deterministic share of requests (``proba_sample_rate``, default 5 %) — not for every one, since
``predict_proba`` costs about as much as ``predict`` — and always when a client asks for them.

Every answer carries ``X-Request-Id`` (the client's, or a new one) and ``traceresponse`` (W3C
Trace Context Level 2: this server's span, in the caller's trace when it sent a valid
``traceparent``, else in a new one whose id is the new request id; a malformed header starts a
new trace, never an error: :mod:`shipyard.observability.tracecontext`); every model answer
carries ``X-Shipyard-Model`` and ``X-Shipyard-Model-Version``. Nothing a client sends can crash
a worker: bad input is a 4xx naming the field, a model that raises is a 500 with the request id.
An error is answered with its class's status (``http_status`` in :mod:`shipyard.errors`, never its
message): the server's own trouble (a full pool, a store that cannot take a write) is a 503
with ``Retry-After``, never a 4xx.

Readiness (``/v2/health/ready``, ``/ping``) is 503 while any live model cannot be served here,
naming it (:mod:`shipyard.serving.readiness`).

Feedback, and the inference of the models served with ``--auth``, need a token
(:mod:`shipyard.serving.doors`): checked from the headers before the body is read or the version
resolved, so a refusal (401/403) costs no model time.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST

from shipyard import __version__
from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.config import ServerSettings
from shipyard.errors import (
    InvalidInput,
    Overloaded,
    RequestTooLarge,
    SchemaViolation,
    ShipyardError,
)
from shipyard.identity import FEEDBACK_WRITE, PREDICT
from shipyard.identity.authn import Authenticator
from shipyard.observability.tracecontext import TraceParent, continue_trace
from shipyard.serving import protocol_mlflow, protocol_v2
from shipyard.serving.decoding import Decoded, Decoder
from shipyard.serving.doors import Doors, doors_settings
from shipyard.serving.execution import BoundedPool, InlineGate, freeze_heap
from shipyard.serving.feedback import record_feedback
from shipyard.serving.limits import DEFAULT_LIMITS, RequestLimits
from shipyard.serving.live import LiveModels, Loaded, routing_key
from shipyard.serving.readiness import Readiness
from shipyard.serving.shadow import ShadowCopies
from shipyard.serving.telemetry import Telemetry

log = logging.getLogger("shipyard.serving")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_TYPE = b"application/json"
UNAVAILABLE = "TEMPORARILY_UNAVAILABLE"

MLFLOW_CODES = {
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    500: "INTERNAL_ERROR",
    503: UNAVAILABLE,
}
"""HTTP status → MLflow's ``error_code`` on ``/invocations``; any other status is BAD_REQUEST."""


class HTTPError(Exception):
    """An error answer; ``headers`` go out with it (the version that refused or failed)."""

    def __init__(
        self,
        status: int,
        message: str,
        mlflow_code: str = "BAD_REQUEST",
        field: str | None = None,
        retry_after_s: float = 1.0,
    ) -> None:
        self.status = status
        self.message = message
        self.mlflow_code = mlflow_code
        self.field = field
        self.headers: Headers = []
        if status in (429, 503):
            self.headers.append((b"retry-after", str(max(1, math.ceil(retry_after_s))).encode()))
        elif status == 401:
            self.headers.append((b"www-authenticate", b'Bearer realm="shipyard"'))
        super().__init__(message)

    @classmethod
    def of(cls, exc: ShipyardError) -> HTTPError:
        """The answer to ``exc``: its class's status (:mod:`shipyard.errors`), its message (after
        ``internal error:`` on a 500) and its field."""
        status = exc.http_status
        code = MLFLOW_CODES.get(status, "BAD_REQUEST")
        if status == 500:
            return cls(status, f"internal error: {exc}", code)
        field = exc.field if isinstance(exc, SchemaViolation) else None
        retry_after_s = float(getattr(exc, "retry_after_s", 1.0))  # StoreBusy, Overloaded, …
        return cls(status, str(exc), code, field, retry_after_s)


Answer = tuple[int, bytes, Headers]
Parsing = tuple[Callable[..., Any], tuple[Any, ...]]
"""A body's parse function and its arguments after the body."""


@dataclass(frozen=True, slots=True)
class RequestIds:
    """Who a request is: its id, this server's span of it, and the caller's span (or None)."""

    rid: str
    trace: TraceParent
    parent: TraceParent | None


@dataclass(frozen=True)
class Job:
    """One inference request on its way through the prediction pool."""

    loaded: Loaded
    limits: RequestLimits
    headers: dict[bytes, bytes]
    body: bytes
    ids: RequestIds
    started: float
    decoded: Decoded | None = None
    """The body as the decoding helper made it, when it was sent ahead."""

    @property
    def rid(self) -> str:
        return self.ids.rid


AFTER_RESPONSE: contextvars.ContextVar[list[Callable[[], None]] | None] = contextvars.ContextVar(
    "after_response", default=None
)
"""Work a request leaves for after its response is on the wire (as Starlette's background
tasks): the shadow's copy. At one client the next request is still on its way then, so the
copy costs the user nothing; on a busy worker it costs the next request what it cost this one."""


def _json(status: int, doc: Any, headers: Headers | None = None) -> Answer:
    return status, json.dumps(doc).encode(), [(b"content-type", JSON_TYPE), *(headers or [])]


class ServingApp:
    """ASGI app serving the live versions that :class:`LiveModels` keeps loaded.

    ``threads`` and ``queue`` size the prediction pool (default: one thread per usable core,
    twice as many waiting); ``inline`` decides which small requests skip the pool; ``decoder``
    decodes large bodies in a helper process (:mod:`shipyard.serving.decoding`);
    ``limits`` are the cost bound of a version without its own ``serving.limits`` tag;
    ``doors`` guards feedback and the models served with ``--auth`` (by default: feedback only,
    with API tokens of the live models' store)."""

    def __init__(
        self,
        live: LiveModels,
        telemetry: Telemetry,
        *,
        default_model: str | None = None,
        proba_sample_rate: float = 0.05,
        clock: Clock = SYSTEM_CLOCK,
        limits: RequestLimits = DEFAULT_LIMITS,
        threads: int | None = None,
        queue: int | None = None,
        inline: InlineGate | None = None,
        decoder: Decoder | None = None,
        doors: Doors | None = None,
    ) -> None:
        self.live = live
        self.telemetry = telemetry
        self.default_model = default_model
        self.proba_sample_rate = proba_sample_rate
        self.clock = clock
        self.limits = limits
        self.pool = BoundedPool("prediction", threads, queue)
        self.inline = inline or InlineGate()
        self.decoder = decoder or Decoder()
        self.store_pool = BoundedPool("store", 2, 8)
        self.doors = doors or Doors(
            Authenticator(live.registry.store, doors_settings(ServerSettings()), clock=clock)
        )
        self.readiness = Readiness(live, self._refused)
        self.shadow = ShadowCopies(
            live, telemetry.registry, telemetry.store, telemetry.artifacts, clock=clock
        )
        self._version_limits: dict[tuple[str, int], RequestLimits | str] = {}
        self._proba_tick = 0.0
        self._proba_lock = threading.Lock()
        self.started = False

    # -- ASGI ----------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers: dict[bytes, bytes] = dict(scope["headers"])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:100]
        fresh = None
        if not rid:
            rid = fresh = uuid.uuid4().hex
        trace, parent = continue_trace(headers.get(b"traceparent"), fresh)
        ids = RequestIds(rid, trace, parent)
        client = scope.get("client")
        address = client[0] if client else ""
        after: list[Callable[[], None]] = []
        token = AFTER_RESPONSE.set(after)
        try:
            await self._respond(scope, receive, send, headers, ids, address)
        finally:
            AFTER_RESPONSE.reset(token)
            for work in after:
                work()  # never raises (ShadowCopies.offer's contract)

    async def _respond(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[bytes, bytes],
        ids: RequestIds,
        address: str,
    ) -> None:
        rid, trace = ids.rid, ids.trace
        try:
            status, payload, extra = await self._dispatch(
                scope["method"], scope["path"], headers, receive, ids, address
            )
        except HTTPError as exc:
            status, payload, extra = self._error(scope["path"], exc)
        except ShipyardError as exc:
            status, payload, extra = self._error(scope["path"], HTTPError.of(exc))
        except Exception as exc:  # a bug of ours must not take the worker down either
            log.exception(
                "unhandled error on request %s",
                rid,
                extra={"request_id": rid, "trace_id": trace.trace_id, "span_id": trace.span_id},
            )
            status, payload, extra = _json(
                500, {"error": f"internal error ({type(exc).__name__}); request id {rid}"}
            )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"x-request-id", rid.encode("latin-1")),
                    (b"traceresponse", trace.header.encode()),
                    (b"content-length", str(len(payload)).encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await asyncio.to_thread(self.startup)
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.shutdown)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def startup(self) -> None:
        self.live.start()
        self.telemetry.start()
        self.shadow.start()
        freeze_heap()  # what is loaded now is never walked by a collection on the request path
        self.started = True

    def shutdown(self) -> None:
        self.pool.shutdown()
        self.store_pool.shutdown()
        self.doors.shutdown()
        self.decoder.shutdown()
        self.live.stop()
        self.shadow.stop()
        self.telemetry.stop()

    @staticmethod
    async def _body(receive: Receive, headers: dict[bytes, bytes], limits: RequestLimits) -> bytes:
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit():
            limits.check_body(int(declared))
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            limits.check_body(size)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks) if len(chunks) != 1 else chunks[0]

    @staticmethod
    def _error(path: str, exc: HTTPError) -> Answer:
        """The error body: MLflow's shape on ``/invocations``, ``{"error"}`` elsewhere; with the
        request's field at fault when there is one."""
        if path.endswith("invocations"):
            doc: dict[str, Any] = {"error_code": exc.mlflow_code, "message": exc.message}
        else:
            doc = {"error": exc.message}
        if exc.field is not None:
            doc["field"] = exc.field
        return _json(exc.status, doc, exc.headers)

    # -- routing -------------------------------------------------------------------------------
    async def _dispatch(
        self,
        method: str,
        path: str,
        headers: dict[bytes, bytes],
        receive: Receive,
        ids: RequestIds,
        address: str = "",
    ) -> Answer:
        parts = [p for p in path.split("/") if p]
        if parts and parts[0] == "v2":
            return await self._v2(method, parts[1:], headers, receive, ids, address)
        if method == "POST" and parts == ["invocations"]:
            model = self._default_model()
            if self.doors.guarded:  # off (the default): this test is all it costs
                await self._guard(model, headers, address)
            return await self._invocations(model, headers, receive, ids)
        if (
            method == "POST"
            and len(parts) == 3
            and parts[0] == "models"
            and parts[2] == "invocations"
        ):
            if self.doors.guarded:
                await self._guard(parts[1], headers, address)
            return await self._invocations(parts[1], headers, receive, ids)
        if method == "GET":
            if parts in (["ping"], ["health"]):
                unready = await self._unready()
                if unready is None:
                    return 200, b"\n", [(b"content-type", b"text/plain")]
                return _json(503, {"ready": False, **unready}, [(b"retry-after", b"1")])
            if parts == ["version"]:
                return 200, __version__.encode(), [(b"content-type", b"text/plain")]
            if parts == ["metrics"]:
                return (
                    200,
                    self.telemetry.exposition(),
                    [(b"content-type", CONTENT_TYPE_LATEST.encode())],
                )
        raise HTTPError(404, f"no route for {method} {path[:200]}", "ENDPOINT_NOT_FOUND")

    async def _guard(self, model: str, headers: dict[bytes, bytes], address: str) -> None:
        """Refuse (401/403) a request for a model served with ``--auth`` that may not ask it;
        from the headers alone, before the body is read (:mod:`shipyard.serving.doors`)."""
        if self.doors.guards(model):
            await self.doors.require(headers, address, PREDICT, model)

    def _default_model(self) -> str:
        if self.default_model:
            return self.default_model
        served = list(self.live.routes)
        if len(served) == 1:
            return served[0]
        raise HTTPError(
            400 if served else 503,
            f"{len(served)} models are served; name one with /models/{{model}}/invocations"
            if served
            else "no model is served yet",
        )

    def _resolve(
        self, model: str, version: str | None, headers: dict[bytes, bytes], rid: str
    ) -> Loaded:
        if version is not None:
            if not version.isdigit() or len(version) > 9:
                raise HTTPError(400, f"version {version[:20]!r} is not a number")
            loaded = self.live.version(model, int(version))
            if loaded is None:
                raise HTTPError(404, f"version {version} of model {model[:200]!r} is not live here")
            return loaded
        loaded = self.live.route(model, routing_key(headers, rid), headers)
        if loaded is None:
            why = self.live.failure(model)
            raise HTTPError(
                404 if why is None else 503,
                f"model {model[:200]!r} is not served"
                + (f": {why}" if why else "; give it an alias with `shipyard models alias`"),
                "RESOURCE_DOES_NOT_EXIST" if why is None else UNAVAILABLE,
            )
        return loaded

    # -- readiness and limits ------------------------------------------------------------------
    async def _unready(self) -> dict[str, Any] | None:
        """Why this worker should take no traffic now, or None when it is ready."""
        if not self.started:
            return {"error": "starting"}
        if self.live.last_error is not None:
            return {"error": f"cannot read the live models: {self.live.last_error}"}
        unservable = self.readiness.unservable()  # from the last refresh: no store read here
        if unservable:
            return {
                "error": "live models cannot be served: " + ", ".join(sorted(unservable)),
                "models": unservable,
            }
        return None

    def _limits_of(self, loaded: Loaded) -> RequestLimits | str:
        """The version's cost bound, or why its ``serving.limits`` tag cannot be used."""
        key = (loaded.model, loaded.version)
        got = self._version_limits.get(key)
        if got is None:
            try:
                got = self.limits.with_tags(loaded.info.tags)
            except InvalidInput as exc:
                got = f"version {loaded.version}: {exc}"
                log.error("cannot serve %s/%s: %s", loaded.model, loaded.version, exc)
            self._version_limits[key] = got
        return got

    def _limits(self, loaded: Loaded) -> RequestLimits:
        got = self._limits_of(loaded)
        if isinstance(got, str):
            refused = HTTPError(503, f"model {loaded.model} cannot be served: {got}", UNAVAILABLE)
            refused.headers += _version_headers(loaded)
            raise refused
        return got

    def _refused(self, model: str) -> str | None:
        route = self.live.routes.get(model)
        for loaded in route.candidates if route is not None else []:
            got = self._limits_of(loaded)
            if isinstance(got, str):
                return got
        return None

    async def _v2(
        self,
        method: str,
        parts: list[str],
        headers: dict[bytes, bytes],
        receive: Receive,
        ids: RequestIds,
        address: str = "",
    ) -> Answer:
        rid = ids.rid
        if not parts:
            return _json(
                200,
                {"name": "shipyard", "version": __version__, "extensions": ["binary_tensor_data"]},
            )
        if parts[0] == "health" and len(parts) == 2 and parts[1] in ("live", "ready"):
            if parts[1] == "live":
                return _json(200, {"live": True})
            unready = await self._unready()
            if unready is None:
                return _json(200, {"ready": True})
            return _json(503, {"ready": False, **unready}, [(b"retry-after", b"1")])
        if parts[0] == "repository" and parts[1:] == ["index"]:
            return _json(
                200,
                [
                    {"name": m, "version": str(v), "state": "READY"}
                    for m, vs in self.live.describe().items()
                    for v in vs
                ],
            )
        if parts[0] != "models" or len(parts) < 2:
            raise HTTPError(404, f"no route for {method} /v2/{'/'.join(parts)[:200]}")
        model, rest = parts[1], parts[2:]
        if rest == ["feedback"] and method == "POST":
            await self.doors.require(headers, address, FEEDBACK_WRITE, model)
            return await self._feedback(model, headers, receive)
        version = None
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        if method == "GET" and rest == ["ready"]:
            return self._model_ready(model, version, headers, rid)
        if self.doors.guarded:
            await self._guard(model, headers, address)
        loaded = self._resolve(model, version, headers, rid)
        head = _version_headers(loaded)
        if method == "GET" and not rest:
            versions = [c.version for c in self.live.routes[model].candidates]
            doc = protocol_v2.metadata(model, versions, loaded.info.flavor, loaded.info.signature)
            return _json(200, doc, head)
        if method == "GET" and rest == ["config"]:
            return _json(200, {"name": model, "platform": f"shipyard-{loaded.info.flavor}"}, head)
        if method == "POST" and rest == ["infer"]:
            return await self._infer(
                loaded, self._infer_v2, self._v2_parsing, headers, receive, ids
            )
        raise HTTPError(404, f"no route for {method} /v2/{'/'.join(parts)[:200]}")

    def _model_ready(
        self, model: str, version: str | None, headers: dict[bytes, bytes], rid: str
    ) -> Answer:
        """Agrees with the server's readiness: 503 naming the reason for a model it counts."""
        why = self.readiness.why_not(model) if version is None else None
        if why is not None:
            return _unready_model(model, why)
        loaded = self._resolve(model, version, headers, rid)
        got = self._limits_of(loaded)
        if isinstance(got, str):
            return _unready_model(model, got)
        return _json(200, {"name": model, "ready": True}, _version_headers(loaded))

    # -- inference -----------------------------------------------------------------------------
    async def _infer(
        self,
        loaded: Loaded,
        answer: Callable[[Job], Answer],
        parsing: Callable[[Job], Parsing],
        headers: dict[bytes, bytes],
        receive: Receive,
        ids: RequestIds,
    ) -> Answer:
        """Read the body within the version's limits, then answer on the prediction pool.

        A large body is first decoded in the helper process, awaited here on the event loop:
        the pool's threads stay free (and small requests keep running inline) while it waits."""
        limits = self._limits(loaded)
        started = time.perf_counter()
        try:
            body = await self._body(receive, headers, limits)
        except RequestTooLarge as exc:
            raise self._refusal(loaded, exc, started, ids) from None
        job = Job(loaded, limits, headers, body, ids, started)
        key = (loaded.model, loaded.version)
        try:
            if self.decoder.offloads(len(body)):
                fn, args = parsing(job)
                job = replace(job, decoded=await self.decoder.decode_ahead(fn, body, *args))
            if self.inline.admits(key, len(body), self.pool):
                return self._timed(answer, job, key, inline=True)
            in_context = contextvars.copy_context().run  # the request's AFTER_RESPONSE
            return await self.pool.run(
                functools.partial(in_context, self._timed, answer, job, key, False)
            )
        except Overloaded as exc:
            self.telemetry.requests_total.labels(loaded.model, str(loaded.version), "503").inc()
            refused = HTTPError.of(exc)
            refused.headers += _version_headers(loaded)
            raise refused from None

    def _parse(self, job: Job, parsing: Callable[[Job], Parsing]) -> Any:
        """The job's body parsed: as the helper decoded it when it was sent ahead, else here or
        in the helper as its size says."""
        fn, args = parsing(job)
        if job.decoded is None:
            return self.decoder.decode(fn, job.body, *args)
        if job.decoded.here:
            return fn(job.body, *args)
        return job.decoded.get()

    def _timed(
        self, answer: Callable[[Job], Answer], job: Job, key: tuple[str, int], inline: bool
    ) -> Answer:
        """``answer(job)``, its wall time told to the inline gate."""
        began = time.perf_counter()
        try:
            return answer(job)
        finally:
            self.inline.observe(key, len(job.body), time.perf_counter() - began, inline)

    def _refusal(
        self, loaded: Loaded, exc: InvalidInput, started: float, ids: RequestIds
    ) -> HTTPError:
        """A data error: counted, logged, answered with its status and the version's headers."""
        refused = HTTPError.of(exc)
        self.telemetry.error(
            loaded.info, "data", refused.status,
            time.perf_counter() - started, ids.rid, str(exc), ids.trace, ids.parent,
        )  # fmt: skip
        refused.headers = _version_headers(loaded)
        return refused

    def _predict(
        self, loaded: Loaded, x: np.ndarray[Any, Any], rid: str, want_proba: bool
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
        predictor = loaded.predictor
        try:
            predictions = predictor.predict(x)
            proba = None
            if predictor.proba_fn is not None and (
                want_proba or (self.telemetry.enabled and self._proba_sampled())
            ):
                proba = predictor.predict_proba(x)
        except Exception as exc:  # logged by the telemetry, with the request's trace
            raise HTTPError(
                500,
                f"model {loaded.model} version {loaded.version} failed on request {rid}: "
                f"{type(exc).__name__}: {exc}",
                "INTERNAL_ERROR",
            ) from None
        return predictions, proba

    def _proba_sampled(self) -> bool:
        with self._proba_lock:
            self._proba_tick += self.proba_sample_rate
            if self._proba_tick >= 1.0:
                self._proba_tick = 0.0
                return True
            return False

    def _run(
        self, job: Job, parse: Callable[[], Any], want_proba: bool = False
    ) -> tuple[Any, np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
        loaded, rid, started = job.loaded, job.rid, job.started
        info, trace, parent = loaded.info, job.ids.trace, job.ids.parent
        try:
            parsed = parse()
        except InvalidInput as exc:
            raise self._refusal(loaded, exc, started, job.ids) from None
        x = parsed.x if isinstance(parsed, protocol_v2.V2Request) else parsed
        try:
            predictions, proba = self._predict(loaded, x, rid, want_proba)
        except HTTPError as exc:
            self.telemetry.error(
                info, "model", 500,
                time.perf_counter() - started, rid, exc.message, trace, parent,
            )  # fmt: skip
            exc.headers = _version_headers(loaded)  # which version failed: a canary's, say
            raise
        self.telemetry.ok(
            info, x, predictions, proba,
            time.perf_counter() - started, rid, trace, parent,
        )  # fmt: skip
        after = AFTER_RESPONSE.get()
        if after is None:  # not under __call__ (a test driving the app's parts)
            self.shadow.offer(loaded, x, predictions, rid)
        else:  # a copy for the shadow once the user has the answer
            after.append(functools.partial(self.shadow.offer, loaded, x, predictions, rid))
        return parsed, predictions, proba

    def _v2_length(self, job: Job) -> int | None:
        """The binary extension's JSON header length, refused when it is not a number."""
        raw_length = job.headers.get(b"inference-header-content-length")
        try:
            return int(raw_length) if raw_length is not None else None
        except ValueError:
            refused = SchemaViolation(
                "Inference-Header-Content-Length is not a number",
                field="Inference-Header-Content-Length",
            )
            raise self._refusal(job.loaded, refused, job.started, job.ids) from None

    def _v2_parsing(self, job: Job) -> Parsing:
        length = self._v2_length(job)
        return protocol_v2.parse_request, (length, job.loaded.info.signature, job.limits)

    def _infer_v2(self, job: Job) -> Answer:
        loaded = job.loaded
        length = self._v2_length(job)
        holder: list[str] = []

        def parse() -> protocol_v2.V2Request:
            req: protocol_v2.V2Request = self._parse(job, self._v2_parsing)
            if "predict_proba" in req.outputs and loaded.predictor.proba_fn is None:
                raise SchemaViolation(
                    f"model {loaded.model} has no predict_proba output", field="outputs"
                )
            holder.append(req.id or job.rid)
            return req

        req, predictions, proba = self._run(job, parse, _asks_proba(job.body, length))
        results: dict[str, np.ndarray[Any, Any]] = {}
        for name in req.outputs:
            got = predictions if name == "predict" else proba
            assert got is not None  # parse() refused predict_proba for models without it
            results[name] = got
        payload, header_length = protocol_v2.encode_response(
            loaded.model, loaded.version, holder[0], results, req.binary_outputs
        )
        extra = [
            (b"content-type", JSON_TYPE if header_length is None else b"application/octet-stream")
        ]
        if header_length is not None:
            extra.append((b"inference-header-content-length", str(header_length).encode()))
        return 200, payload, extra + _version_headers(loaded)

    async def _invocations(
        self, model: str, headers: dict[bytes, bytes], receive: Receive, ids: RequestIds
    ) -> Answer:
        loaded = self._resolve(model, None, headers, ids.rid)
        return await self._infer(
            loaded, self._answer_mlflow, _mlflow_parsing, headers, receive, ids
        )

    def _answer_mlflow(self, job: Job) -> Answer:
        loaded = job.loaded
        _, predictions, _ = self._run(job, lambda: self._parse(job, _mlflow_parsing))
        return (
            200,
            protocol_mlflow.encode_predictions(predictions),
            [(b"content-type", JSON_TYPE), *_version_headers(loaded)],
        )

    async def _feedback(self, model: str, headers: dict[bytes, bytes], receive: Receive) -> Answer:
        body = await self._body(receive, headers, self.limits)
        store, limits = self.live.registry.store, self.limits
        accepted = await self.store_pool.run(
            lambda: record_feedback(store, model, body, self.clock, limits)
        )
        return _json(200, {"accepted": accepted})


def _mlflow_parsing(job: Job) -> Parsing:
    content_type = job.headers.get(b"content-type", b"application/json").decode("latin-1")
    return protocol_mlflow.parse, (content_type, job.loaded.info.signature, job.limits)


def _unready_model(model: str, why: str) -> Answer:
    return _json(503, {"name": model, "ready": False, "error": why}, [(b"retry-after", b"1")])


def _asks_proba(body: bytes, length: int | None) -> bool:
    head = body[:length] if length is not None else body
    return b"predict_proba" in head


def _version_headers(loaded: Loaded) -> Headers:
    return [
        (b"x-shipyard-model", loaded.model.encode()),
        (b"x-shipyard-model-version", str(loaded.version).encode()),
    ]
