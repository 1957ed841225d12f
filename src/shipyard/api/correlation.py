"""Each control-plane request's ids: on its answer, on its log lines and in its audit events.

A request keeps the caller's ``X-Request-Id`` (at most 100 characters) or gets a new one, and
joins the caller's W3C trace when it sent a valid ``traceparent``; a missing or malformed header
starts a new trace whose id is the new request id, never an error (the model server's rule,
:mod:`shipyard.observability.tracecontext`). Every answer names both (``X-Request-Id``,
``traceresponse``), the 413s, 401s and 500s included.

Every line logged while the request is served carries ``request_id``, ``trace_id``,
``span_id`` (this server's span), ``parent_id`` (the caller's, when it sent one) and, once the
request is authenticated, ``identity``; one line per request says how it was answered
(``info``; a refusal of who is asking, 401/403/429, at ``warning``; a probe or a dashboard
file at ``debug``). A 500 is logged once, by the application's incident handler, with the same
fields.

The audit events a request records carry its ``request_id`` and ``trace_id`` in their details
when the caller sent a ``traceparent`` or an ``X-Request-Id`` — ids it can follow them by
(``shipyard trace``); a request that named neither leaves its events as they were.
"""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shipyard.observability.logs import bound
from shipyard.observability.tracecontext import (
    TRACEPARENT,
    TRACERESPONSE,
    TraceParent,
    continue_trace,
)

__all__ = ["REQUEST_ID", "Correlate", "RequestIds", "current", "ids_of"]

log = logging.getLogger("shipyard.server")

REQUEST_ID = "x-request-id"
MAX_REQUEST_ID = 100
SCOPE_KEY = "shipyard.request"
REFUSALS = frozenset({401, 403, 429})
_current: contextvars.ContextVar[RequestIds | None] = contextvars.ContextVar(
    "shipyard.request_ids", default=None
)


@dataclass
class RequestIds:
    """One request's ids; ``identity`` is filled in once the request is authenticated."""

    request_id: str
    trace: TraceParent
    parent: TraceParent | None
    named: bool
    """Whether the caller sent a ``traceparent`` or an ``X-Request-Id``."""
    identity: str | None = None

    def fields(self) -> dict[str, Any]:
        """The log fields of the request's lines."""
        found: dict[str, Any] = {
            "request_id": self.request_id,
            "trace_id": self.trace.trace_id,
            "span_id": self.trace.span_id,
        }
        if self.parent is not None:
            found["parent_id"] = self.parent.span_id
        if self.identity is not None:
            found["identity"] = self.identity
        return found

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (REQUEST_ID.encode(), self.request_id.encode("latin-1")),
            (TRACERESPONSE.encode(), self.trace.header.encode()),
        ]

    def audited(self) -> dict[str, str] | None:
        """What the request's audit events carry: its ids, when the caller named any."""
        if not self.named:
            return None
        return {"request_id": self.request_id, "trace_id": self.trace.trace_id}


def ids_of(scope: Scope) -> RequestIds | None:
    """The ids :class:`Correlate` gave the request of ``scope``."""
    found = scope.get(SCOPE_KEY)
    return found if isinstance(found, RequestIds) else None


def current() -> RequestIds | None:
    """The ids of the request being served here (its operation's thread included)."""
    return _current.get()


class Correlate:
    """The ASGI middleware that names each HTTP request (the outermost but Starlette's error
    handler, which reads the ids from the scope)."""

    def __init__(self, app: ASGIApp, api_prefix: str = "/api/") -> None:
        self.app = app
        self.api_prefix = api_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        rid = headers.get(REQUEST_ID.encode(), b"").decode("latin-1")[:MAX_REQUEST_ID]
        sent_trace = headers.get(TRACEPARENT.encode())
        named = bool(rid) or sent_trace is not None
        fresh = None
        if not rid:
            rid = fresh = uuid.uuid4().hex
        trace, parent = continue_trace(sent_trace, fresh)
        ids = RequestIds(rid, trace, parent, named)
        scope[SCOPE_KEY] = ids
        status = 0
        started = time.perf_counter()

        async def named_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), *ids.headers()]}
            await send(message)

        token = _current.set(ids)
        try:
            with bound(**ids.fields()):
                await self.app(scope, receive, named_send)
        finally:
            _current.reset(token)
        # an exception that escaped is answered and logged by the incident handler
        self._log(scope, ids, status, time.perf_counter() - started)

    def _log(self, scope: Scope, ids: RequestIds, status: int, elapsed_s: float) -> None:
        path = scope.get("path", "")
        if not path.startswith(self.api_prefix):
            level = logging.DEBUG  # probes and the dashboard's files: a line each would drown
        elif status in REFUSALS:
            level = logging.WARNING
        else:
            level = logging.INFO
        if not log.isEnabledFor(level):
            return
        method = scope.get("method", "")
        log.log(
            level,
            "%s %s %d in %.1f ms",
            method,
            path,
            status,
            elapsed_s * 1000,
            extra={
                **ids.fields(),
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(elapsed_s * 1000, 3),
            },
        )
