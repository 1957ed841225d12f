"""The two ways to reach the operations: in-process (embedded) and over HTTP (a server).

Both take the same flat keyword arguments and give back the same JSON data, and both raise the
same :class:`~shipyard.errors.ShipyardError` classes: a server's error answer carries its class
name, and :class:`HttpClient` raises that class again (or one with its exit code), so a command
prints the same line and exits with the same code whichever way it ran.

A command run with ``TRACEPARENT`` in its environment (a CI job's trace, say) sends it with each
request, so the server's lines and the audit events of what the command did join that trace
(the variable as OpenTelemetry's "Environment Variables as Context Propagation Carriers"
names it, https://opentelemetry.io/docs/specs/otel/context/env-carriers/); a malformed value
is not sent.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Protocol
from urllib.parse import quote

from shipyard import errors
from shipyard.api.operations import Context, resolve
from shipyard.errors import ShipyardError, StoreError

if TYPE_CHECKING:
    import httpx

    from shipyard.identity import Principal
    from shipyard.workspace import Workspace

API_PREFIX = "/api/v1"
TRACEPARENT_ENV = "TRACEPARENT"


PAGE_ALL = 1000
"""The page size :func:`every` asks for (the most a list gives)."""


def every(client: Client, name: str, /, **params: Any) -> Iterator[dict[str, Any]]:
    """Every item of the paged list ``name``, page after page."""
    cursor = None
    while True:
        found = client.call(name, **params, limit=PAGE_ALL, cursor=cursor)
        yield from found["items"]
        cursor = found["next"]
        if cursor is None:
            return


class Client(Protocol):
    def call(self, name: str, /, **params: Any) -> Any: ...

    @property
    def remote(self) -> str | None:
        """The server's URL, or None in the embedded mode."""
        ...


class LocalClient:
    """The embedded mode: the operation runs here, on the workspace's database, as
    ``principal`` (who may do anything; the audit records the mode as ``embedded``)."""

    remote: ClassVar[str | None] = None

    def __init__(self, ws: Workspace, principal: Principal, *, release: bool = False) -> None:
        """``release``: close the database's connections after each call (a command's client
        owns its workspace; the next call, if any, reconnects)."""
        self.ws = ws
        self.principal = principal
        self.release = release

    def call(self, name: str, /, **params: Any) -> Any:
        from shipyard.audit import acting

        op = resolve(name)
        kwargs = op.bind(params)
        try:
            with acting(self.principal.name, self.principal.mode):
                result = op.func(Context(self.ws, self.principal), **kwargs)
        finally:
            if self.release:
                self.ws.store.dispose()
        # What a server would send: the same JSON, so a command cannot tell the two apart.
        return json.loads(json.dumps(result, allow_nan=False))


class RemoteError(ShipyardError):
    """A server's error whose class this client does not know: its status and exit code."""

    def __init__(self, message: str, http_status: int, exit_code: int) -> None:
        super().__init__(message)
        self.http_status = http_status  # type: ignore[misc]
        self.exit_code = exit_code  # type: ignore[misc]


def error_from(status: int, payload: Any) -> ShipyardError:
    """The exception a server's error answer stands for."""
    message = f"the server answered {status}"
    kind = None
    if isinstance(payload, dict):
        message = str(payload.get("error") or message)
        kind = payload.get("type")
    cls = getattr(errors, kind, None) if isinstance(kind, str) else None
    if isinstance(cls, type) and issubclass(cls, ShipyardError):
        # The same class, carrying the server's message (its constructor may want fields the
        # answer does not carry, so it is not called).
        exc = cls.__new__(cls)
        Exception.__init__(exc, message)
        return exc
    return RemoteError(message, status, 4 if status in (401, 403, 429) else 1)


class HttpClient:
    """A server at ``url``, as the holder of ``token``."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.remote = url.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s
        self._transport = transport

    def call(self, name: str, /, **params: Any) -> Any:
        import httpx

        op = resolve(name)
        path_params, query, body = op.split(params)
        path = op.path.format(**{k: quote(v, safe="") for k, v in path_params.items()})
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if traceparent := _traceparent():
            headers["traceparent"] = traceparent
        try:
            # A client per call: a command makes a few calls, and nothing is left open after.
            with httpx.Client(
                base_url=self.remote + API_PREFIX,
                headers=headers,
                timeout=self._timeout_s,
                transport=self._transport,
            ) as http:
                response = http.request(
                    op.method,
                    path,
                    params=query or None,
                    json=body if op.body is not None else None,
                )
        except httpx.TimeoutException:
            raise StoreError(f"the server at {self.remote} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise StoreError(f"cannot reach the server at {self.remote}: {exc}") from None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code >= 400:
            raise error_from(response.status_code, payload)
        return payload


def _traceparent() -> str | None:
    """The environment's ``TRACEPARENT`` when it is a valid one."""
    value = os.environ.get(TRACEPARENT_ENV)
    if not value:
        return None
    from shipyard.observability.tracecontext import parse

    return value.strip() if parse(value) is not None else None
