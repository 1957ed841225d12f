"""``shipyard server``'s HTTP application: every registered operation under ``/api/v1``.

Each request is authenticated (:class:`~shipyard.identity.authn.Authenticator`) before its
operation runs; the operation then runs as that principal (:func:`shipyard.audit.acting` makes
every audit event it records carry that name, in ``server`` mode). Errors become answers in one
place, by class: a :class:`~shipyard.errors.ShipyardError` is its ``http_status`` with
``{"error": message, "type": class name}``; a malformed request is a 400 naming each bad field;
anything else is a 500 that says nothing of its cause to the client (the server logs it).

Every request is named (:mod:`shipyard.api.correlation`): its request id and W3C trace are on
its answer, on the server's log lines about it and in the audit events it records.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Body, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shipyard import __version__
from shipyard.api.correlation import Correlate, current, ids_of
from shipyard.api.operations import Context, Operation, load_all
from shipyard.audit import acting
from shipyard.errors import ShipyardError
from shipyard.identity import Principal
from shipyard.identity.authn import Authenticator
from shipyard.observability.logs import bound
from shipyard.ui import mount as mount_dashboard
from shipyard.workspace import Workspace

log = logging.getLogger("shipyard.server")

API_PREFIX = "/api/v1"
MAX_BODY_BYTES = 1 << 20
"""A request body larger than this is refused (413) before it is read whole."""

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "type"],
    "properties": {"error": {"type": "string"}, "type": {"type": "string"}},
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": text,
        "content": {"application/json": {"schema": ERROR_SCHEMA}},
    }
    for status, text in (
        (400, "A malformed request: the message names each bad field."),
        (401, "No valid credential."),
        (403, "The identity's roles do not allow this."),
        (404, "Not found."),
        (409, "The action conflicts with the current state."),
        (413, "The request body is too large."),
        (429, "Too many failed sign-ins; see Retry-After."),
        (503, "The database is busy or unreachable; see Retry-After."),
    )
}


def error_response(exc: ShipyardError) -> JSONResponse:
    headers = {}
    if exc.http_status in (429, 503):
        headers["Retry-After"] = str(int(getattr(exc, "retry_after_s", 1) or 1))
    if exc.http_status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="shipyard"'
    return JSONResponse(
        {"error": str(exc), "type": type(exc).__name__},
        status_code=exc.http_status,
        headers=headers,
    )


class BodyLimit:
    """Refuses a body over ``limit`` bytes with a 413, by its Content-Length or as it streams,
    so that no request can make the server hold an unbounded body."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.limit:
                    await self._refuse(send)
                    return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse(
            {
                "error": f"the request body is larger than {self.limit} bytes",
                "type": "RequestTooLarge",
            },
            status_code=413,
        )
        await response({"type": "http"}, _no_receive, send)


class _TooLarge(Exception):
    pass


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def create_app(ws: Workspace, authenticator: Authenticator | None = None) -> FastAPI:
    """The control plane over ``ws``."""
    authenticator = authenticator or Authenticator(ws.store, ws.settings.server, ws.clock)
    threads = ws.settings.server.threads

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # the operations are synchronous and run on Starlette's thread pool: this many at once
        # per worker (see ServerSettings.threads)
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        yield

    app = FastAPI(
        lifespan=lifespan,
        title="Shipyard control plane",
        version=__version__,
        description=(
            "Pipelines and runs, quota, models, monitors, alerts and silences, rollouts and the "
            "audit. Every endpoint needs `Authorization: Bearer <token>` (an API token from "
            "`shipyard token create`, or the identity provider's token when single sign-on is "
            "configured). Lists are paged: `limit`, and `cursor` from the previous page's `next`. "
            "Every answer names its `X-Request-Id` (yours, or a new one) and its W3C "
            "`traceresponse` (in your trace when you send a valid `traceparent`; a malformed one "
            "starts a new trace); the audit events a request records carry both when you sent "
            "either, so `GET /traces/{trace_id}` follows the request to what it caused."
        ),
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # the interactive docs load their scripts from a CDN
        redoc_url=None,
    )

    def principal(request: Request) -> Principal:
        address = request.client.host if request.client else ""
        who = authenticator.authenticate(request.headers.get("authorization"), address)
        if (ids := ids_of(request.scope)) is not None:
            ids.identity = who.name  # for the request's line, logged as it is answered
        return who

    app.state.workspace = ws
    app.state.authenticator = authenticator

    @app.exception_handler(ShipyardError)
    async def _shipyard_error(request: Request, exc: ShipyardError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()))
            parts.append(f"{where}: {error.get('msg', 'invalid')}")
        return JSONResponse(
            {"error": "; ".join(parts) or "malformed request", "type": "InvalidInput"},
            status_code=400,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "NotFound", 405: "InvalidInput"}.get(exc.status_code, "ShipyardError")
        return JSONResponse(
            {"error": str(exc.detail), "type": kind},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        incident = uuid.uuid4().hex[:12]
        ids = ids_of(request.scope)
        fields = ids.fields() if ids is not None else {}
        log.error(
            "incident %s: %s %s",
            incident,
            request.method,
            request.url.path,
            exc_info=exc,
            extra={**fields, "status": 500},
        )
        return JSONResponse(
            {
                "error": f"internal error (incident {incident} in the server's log)",
                "type": "ShipyardError",
            },
            status_code=500,
            headers=dict((k.decode(), v.decode("latin-1")) for k, v in ids.headers())
            if ids is not None
            else None,
        )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:  # on the event loop: never behind a slow operation
        return {"status": "ok"}

    for op in sorted(load_all().values(), key=lambda o: (o.tags, o.path, o.method)):
        _add_route(app, op, ws, authenticator, principal)
    app.add_middleware(BodyLimit)
    app.add_middleware(Correlate, api_prefix=API_PREFIX + "/")
    mount_dashboard(app)
    return app


def _add_route(
    app: FastAPI, op: Operation, ws: Workspace, authenticator: Authenticator, principal: Any
) -> None:
    params = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[str, Path(min_length=1, max_length=200)],
        )
        for name in op.path_params
    ]
    if op.query is not None:
        params.append(
            inspect.Parameter(
                "query", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[op.query, Query()]
            )
        )
    if op.body is not None:
        params.append(
            inspect.Parameter(
                "body", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[op.body, Body()]
            )
        )
    params.append(
        inspect.Parameter(
            "who",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[Principal, Depends(principal)],
        )
    )

    changes_identities = op.method != "GET" and op.name.startswith("identity.")

    def endpoint(**kwargs: Any) -> JSONResponse:
        who: Principal = kwargs.pop("who")
        ids = current()
        audited = ids.audited() if ids is not None else None
        try:
            with acting(who.name, who.mode, request=audited), bound(identity=who.name):
                result = op.func(Context(ws, who), **kwargs)
        finally:
            if changes_identities:  # a revoked token or unbound role counts from now on
                authenticator.forget()
        return JSONResponse(result)

    endpoint.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    endpoint.__name__ = op.name.replace(".", "_")
    app.add_api_route(
        API_PREFIX + op.path,
        endpoint,
        methods=[op.method],
        name=op.name,
        operation_id=op.name,
        summary=op.summary,
        description=op.description,
        tags=list(op.tags),
        responses=ERROR_RESPONSES,
        response_class=JSONResponse,
    )
