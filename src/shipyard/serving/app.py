"""The model server's HTTP face: a lean ASGI application.

Written against the bare ASGI interface rather than a framework router: a one-row prediction is
a few hundred microseconds of work, and a framework's routing, request objects and dependency
injection would cost as much again (see ``benchmarks/serving.py``). The model runs on the event
loop thread — no thread hop — so a worker serves one prediction at a time; run several workers
(``--workers N``) to use several cores.

Class probabilities, which confidence-based performance estimation needs, are computed for a
deterministic share of requests (``proba_sample_rate``, default 5 %) — not for every one, since
``predict_proba`` costs about as much as ``predict`` — and always when a client asks for them.

Every answer carries ``X-Request-Id`` (the client's, or a new one); every model answer carries
``X-Shipyard-Model`` and ``X-Shipyard-Model-Version``. Nothing a client sends can crash a worker:
bad input is a 4xx naming the field, a model that raises is a 500 with the request id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST

from shipyard import __version__
from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.errors import InvalidInput, ShipyardError
from shipyard.serving import protocol_mlflow, protocol_v2
from shipyard.serving.feedback import record_feedback
from shipyard.serving.live import LiveModels, Loaded, routing_key
from shipyard.serving.telemetry import Telemetry

log = logging.getLogger("shipyard.serving")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_BODY_BYTES = 64 * 1024 * 1024
JSON_TYPE = b"application/json"


class HTTPError(Exception):
    """An error answer; ``headers`` go out with it (the version that refused or failed)."""

    def __init__(self, status: int, message: str, mlflow_code: str = "BAD_REQUEST") -> None:
        self.status = status
        self.message = message
        self.mlflow_code = mlflow_code
        self.headers: list[tuple[bytes, bytes]] = []
        super().__init__(message)


Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]


def _json(status: int, doc: Any, headers: list[tuple[bytes, bytes]] | None = None) -> Answer:
    return status, json.dumps(doc).encode(), [(b"content-type", JSON_TYPE), *(headers or [])]


class ServingApp:
    """ASGI app serving the live versions that :class:`LiveModels` keeps loaded."""

    def __init__(
        self,
        live: LiveModels,
        telemetry: Telemetry,
        *,
        default_model: str | None = None,
        proba_sample_rate: float = 0.05,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.live = live
        self.telemetry = telemetry
        self.default_model = default_model
        self.proba_sample_rate = proba_sample_rate
        self.clock = clock
        self._proba_tick = 0.0
        self.started = False

    # -- ASGI ----------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers: dict[bytes, bytes] = dict(scope["headers"])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:100] or uuid.uuid4().hex
        try:
            body = await self._body(receive, headers)
            status, payload, extra = await self._dispatch(
                scope["method"], scope["path"], headers, body, rid
            )
        except HTTPError as exc:
            status, payload, extra = self._error(scope["path"], exc)
        except Exception as exc:  # a bug of ours must not take the worker down either
            log.exception("unhandled error on request %s", rid)
            status, payload, extra = _json(
                500, {"error": f"internal error ({type(exc).__name__}); request id {rid}"}
            )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"x-request-id", rid.encode("latin-1")),
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
        self.started = True

    def shutdown(self) -> None:
        self.live.stop()
        self.telemetry.stop()

    @staticmethod
    async def _body(receive: Receive, headers: dict[bytes, bytes]) -> bytes:
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise HTTPError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise HTTPError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks) if len(chunks) != 1 else chunks[0]

    @staticmethod
    def _error(path: str, exc: HTTPError) -> Answer:
        if path.endswith("invocations"):
            doc = {"error_code": exc.mlflow_code, "message": exc.message}
            return _json(exc.status, doc, exc.headers)
        return _json(exc.status, {"error": exc.message}, exc.headers)

    # -- routing -------------------------------------------------------------------------------
    async def _dispatch(
        self, method: str, path: str, headers: dict[bytes, bytes], body: bytes, rid: str
    ) -> Answer:
        parts = [p for p in path.split("/") if p]
        if parts and parts[0] == "v2":
            return await self._v2(method, parts[1:], headers, body, rid)
        if method == "POST" and parts == ["invocations"]:
            return self._invocations(self._default_model(), headers, body, rid)
        if (
            method == "POST"
            and len(parts) == 3
            and parts[0] == "models"
            and parts[2] == "invocations"
        ):
            return self._invocations(parts[1], headers, body, rid)
        if method == "GET":
            if parts in (["ping"], ["health"]):
                return 200, b"\n", [(b"content-type", b"text/plain")]
            if parts == ["version"]:
                return 200, __version__.encode(), [(b"content-type", b"text/plain")]
            if parts == ["metrics"]:
                return (
                    200,
                    self.telemetry.exposition(),
                    [(b"content-type", CONTENT_TYPE_LATEST.encode())],
                )
        raise HTTPError(404, f"no route for {method} {path}", "ENDPOINT_NOT_FOUND")

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
            if not version.isdigit():
                raise HTTPError(400, f"version {version!r} is not a number")
            loaded = self.live.version(model, int(version))
            if loaded is None:
                raise HTTPError(404, f"version {version} of model {model!r} is not live here")
            return loaded
        loaded = self.live.route(model, routing_key(headers, rid))
        if loaded is None:
            why = self.live.failure(model)
            raise HTTPError(
                404 if why is None else 503,
                f"model {model!r} is not served"
                + (f": {why}" if why else "; give it an alias with `shipyard models alias`"),
                "RESOURCE_DOES_NOT_EXIST",
            )
        return loaded

    async def _v2(
        self, method: str, parts: list[str], headers: dict[bytes, bytes], body: bytes, rid: str
    ) -> Answer:
        if not parts:
            return _json(
                200,
                {"name": "shipyard", "version": __version__, "extensions": ["binary_tensor_data"]},
            )
        if parts[0] == "health" and len(parts) == 2 and parts[1] in ("live", "ready"):
            ready = parts[1] == "live" or (self.started and self.live.last_error is None)
            return _json(200 if ready else 503, {parts[1]: ready})
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
            raise HTTPError(404, f"no route for {method} /v2/{'/'.join(parts)}")
        model, rest = parts[1], parts[2:]
        if rest == ["feedback"] and method == "POST":
            return await self._feedback(model, body)
        version = None
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        loaded = self._resolve(model, version, headers, rid)
        head = _version_headers(loaded)
        if method == "GET" and not rest:
            versions = [c.version for c in self.live.routes[model].candidates]
            doc = protocol_v2.metadata(model, versions, loaded.info.flavor, loaded.info.signature)
            return _json(200, doc, head)
        if method == "GET" and rest == ["ready"]:
            return _json(200, {"name": model, "ready": True}, head)
        if method == "GET" and rest == ["config"]:
            return _json(200, {"name": model, "platform": f"shipyard-{loaded.info.flavor}"}, head)
        if method == "POST" and rest == ["infer"]:
            return self._infer_v2(loaded, headers, body, rid)
        raise HTTPError(404, f"no route for {method} /v2/{'/'.join(parts)}")

    # -- inference -----------------------------------------------------------------------------
    def _predict(
        self, loaded: Loaded, x: np.ndarray[Any, Any], rid: str, want_proba: bool
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
        predictor = loaded.predictor
        try:
            predictions = predictor.predict(x)
            proba = None
            if predictor.proba_fn is not None and (want_proba or self.telemetry.enabled):
                self._proba_tick += self.proba_sample_rate
                if want_proba or self._proba_tick >= 1.0:
                    self._proba_tick = 0.0 if self._proba_tick >= 1.0 else self._proba_tick
                    proba = predictor.predict_proba(x)
        except Exception as exc:
            log.warning("model %s/%s raised on %s: %r", loaded.model, loaded.version, rid, exc)
            raise HTTPError(
                500,
                f"model {loaded.model} version {loaded.version} failed on request {rid}: "
                f"{type(exc).__name__}: {exc}",
                "INTERNAL_ERROR",
            ) from None
        return predictions, proba

    def _run(
        self,
        loaded: Loaded,
        parse: Callable[[], Any],
        rid: str,
        started: float,
        want_proba: bool = False,
    ) -> tuple[Any, np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
        info = loaded.info
        try:
            parsed = parse()
        except InvalidInput as exc:
            status = 415 if isinstance(exc, protocol_mlflow.UnsupportedMediaType) else 400
            self.telemetry.error(
                info, "data", status,
                time.perf_counter() - started, rid, str(exc),
            )  # fmt: skip
            refused = HTTPError(status, str(exc))
            refused.headers = _version_headers(loaded)
            raise refused from None
        x = parsed.x if isinstance(parsed, protocol_v2.V2Request) else parsed
        try:
            predictions, proba = self._predict(loaded, x, rid, want_proba)
        except HTTPError as exc:
            self.telemetry.error(
                info, "model", 500,
                time.perf_counter() - started, rid, exc.message,
            )  # fmt: skip
            exc.headers = _version_headers(loaded)  # which version failed: a canary's, say
            raise
        self.telemetry.ok(
            info, x, predictions, proba,
            time.perf_counter() - started, rid,
        )  # fmt: skip
        return parsed, predictions, proba

    def _infer_v2(
        self, loaded: Loaded, headers: dict[bytes, bytes], body: bytes, rid: str
    ) -> Answer:
        started = time.perf_counter()
        raw_length = headers.get(b"inference-header-content-length")
        try:
            length = int(raw_length) if raw_length is not None else None
        except ValueError:
            raise HTTPError(400, "Inference-Header-Content-Length is not a number") from None
        signature = loaded.info.signature
        holder: list[str] = []

        def parse() -> protocol_v2.V2Request:
            req = protocol_v2.parse_request(body, length, signature)
            if "predict_proba" in req.outputs and loaded.predictor.proba_fn is None:
                raise InvalidInput(f"model {loaded.model} has no predict_proba output")
            holder.append(req.id or rid)
            return req

        want_proba = _asks_proba(body, length)
        req, predictions, proba = self._run(loaded, parse, rid, started, want_proba)
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

    def _invocations(
        self, model: str, headers: dict[bytes, bytes], body: bytes, rid: str
    ) -> Answer:
        started = time.perf_counter()
        loaded = self._resolve(model, None, headers, rid)
        content_type = headers.get(b"content-type", b"application/json").decode("latin-1")
        signature = loaded.info.signature
        _, predictions, _ = self._run(
            loaded, lambda: protocol_mlflow.parse(body, content_type, signature), rid, started
        )
        return (
            200,
            protocol_mlflow.encode_predictions(predictions),
            [(b"content-type", JSON_TYPE), *_version_headers(loaded)],
        )

    async def _feedback(self, model: str, body: bytes) -> Answer:
        store = self.live.registry.store
        try:
            accepted = await asyncio.to_thread(record_feedback, store, model, body, self.clock)
        except ShipyardError as exc:
            raise HTTPError(404 if "not found" in str(exc) else 400, str(exc)) from None
        return _json(200, {"accepted": accepted})


def _asks_proba(body: bytes, length: int | None) -> bool:
    head = body[:length] if length is not None else body
    return b"predict_proba" in head


def _version_headers(loaded: Loaded) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-shipyard-model", loaded.model.encode()),
        (b"x-shipyard-model-version", str(loaded.version).encode()),
    ]
