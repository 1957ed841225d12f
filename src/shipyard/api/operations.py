"""The control plane's operations: each is declared once, here or in a module of
:mod:`shipyard.api.ops`, and reached two ways with the same result.

An operation is a function ``op(ctx, *, <path params>, query=<model>, body=<model>)`` that
checks what ``ctx.principal`` may do, calls the services and returns JSON-ready data (dicts,
lists, strings, finite numbers, ``None``). :func:`operation` registers it with its HTTP method
and path; then

- :mod:`shipyard.api.app` serves it at ``/api/v1<path>``, parsing the path, the query model and
  the body model from the request (FastAPI; the OpenAPI description comes from the same models);
- :class:`shipyard.api.client.LocalClient` calls it in-process for the embedded mode, and
  :class:`shipyard.api.client.HttpClient` calls it over HTTP, both from the same flat keyword
  arguments (``client.call("audit.list", actor="bob", limit=10)``).

So each CLI command has one code path whichever way it talks to Shipyard. The module of an
operation is the part of its name before the first dot (``audit.list`` lives in
``shipyard.api.ops.audit``), so a command imports only the operations it uses.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shipyard.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from shipyard.identity import Principal
    from shipyard.workspace import Workspace

_PATH_PARAM = re.compile(r"\{([a-z_]+)\}")
_NAME = re.compile(r"^[a-z_]+(\.[a-z_]+)+$")


class Params(BaseModel):
    """Base of every query and body model: unknown fields are refused, naming them."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PageQuery(Params):
    """Pagination of a list: at most ``limit`` items from ``cursor`` (the ``next`` of the page
    before; absent for the first page)."""

    limit: int = Field(50, ge=1, le=1000, description="How many items at most.")
    cursor: str | None = Field(None, max_length=200, description="The `next` of the previous page.")


def page(items: list[Any], next_cursor: str | None, **extra: Any) -> dict[str, Any]:
    """The shape of every list: ``{"items": [...], "next": cursor or null, ...}``."""
    return {"items": items, "next": next_cursor, **extra}


@dataclass
class Context:
    """What an operation runs with: the workspace and who is acting."""

    ws: Workspace
    principal: Principal

    @property
    def actor(self) -> str:
        return self.principal.name

    @property
    def mode(self) -> str:
        return self.principal.mode

    @property
    def now(self) -> float:
        return self.ws.clock.time()

    def require(self, action: str, subject: str | None = None) -> None:
        self.principal.require(action, subject)


@dataclass(frozen=True)
class Operation:
    name: str
    method: str
    path: str
    func: Callable[..., Any]
    summary: str
    description: str
    path_params: tuple[str, ...]
    query: type[Params] | None
    body: type[Params] | None
    tags: tuple[str, ...] = field(default=())

    def bind(self, params: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments of :attr:`func` from flat ``params``: path parameters as they
        are, the rest parsed into the query and body models (a bad value is
        :class:`InvalidInput` naming the field)."""
        kwargs: dict[str, Any] = {}
        rest = dict(params)
        for name in self.path_params:
            if name not in rest:
                raise TypeError(f"{self.name} needs {name}")
            kwargs[name] = str(rest.pop(name))
        for slot, model in (("query", self.query), ("body", self.body)):
            if model is None:
                continue
            mine = {k: rest.pop(k) for k in list(rest) if k in model.model_fields}
            try:
                kwargs[slot] = model.model_validate(
                    {k: v for k, v in mine.items() if v is not None}
                )
            except ValidationError as exc:
                raise InvalidInput(describe(exc, slot)) from None
        if rest:
            raise TypeError(f"{self.name} takes no {sorted(rest)}")
        return kwargs

    def split(
        self, params: dict[str, Any]
    ) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        """(path, query, body) of flat ``params`` for an HTTP request (``None`` values dropped)."""
        rest = {k: v for k, v in params.items() if v is not None}
        path = {name: str(rest.pop(name)) for name in self.path_params}
        query = {k: rest.pop(k) for k in list(rest) if self.query and k in self.query.model_fields}
        body = {k: rest.pop(k) for k in list(rest) if self.body and k in self.body.model_fields}
        if rest:
            raise TypeError(f"{self.name} takes no {sorted(rest)}")
        return path, query, body


def describe(exc: ValidationError, slot: str) -> str:
    """One line naming each bad field: ``query.limit: Input should be less than or equal to
    1000``."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in (slot, *error.get("loc", ())))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or f"{slot}: invalid"


REGISTRY: dict[str, Operation] = {}


def operation(
    method: str, path: str, *, name: str, tags: tuple[str, ...] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``func`` as the operation ``name`` at ``METHOD /api/v1<path>``. Its docstring's
    first line is the summary, the rest the description."""
    if not _NAME.match(name):
        raise ValueError(f"operation name {name!r}: module.verb")
    method = method.upper()

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        hints = get_type_hints(func)
        signature = inspect.signature(func)
        path_params = tuple(_PATH_PARAM.findall(path))
        for p in path_params:
            if p not in signature.parameters:
                raise ValueError(f"{name}: path parameter {p} is not an argument of {func}")
        query = hints.get("query")
        body = hints.get("body")
        doc = inspect.cleandoc(func.__doc__ or name)
        summary, _, description = doc.partition("\n")
        if name in REGISTRY:
            raise ValueError(f"operation {name} is registered twice")
        REGISTRY[name] = Operation(
            name=name,
            method=method,
            path=path,
            func=func,
            summary=summary.strip(),
            description=description.strip(),
            path_params=path_params,
            query=query,
            body=body,
            tags=tags or (name.split(".")[0],),
        )
        return func

    return register


def resolve(name: str) -> Operation:
    """The operation ``name``, importing its module if needed."""
    if name not in REGISTRY:
        module = name.split(".")[0]
        try:
            import_module(f"shipyard.api.ops.{module}")
        except ModuleNotFoundError:
            raise NotFound("operation", name) from None
    try:
        return REGISTRY[name]
    except KeyError:
        raise NotFound("operation", name) from None


def load_all() -> dict[str, Operation]:
    """Every operation (the server and the OpenAPI description need them all)."""
    import pkgutil

    import shipyard.api.ops as ops

    for info in pkgutil.iter_modules(ops.__path__):
        import_module(f"shipyard.api.ops.{info.name}")
    return REGISTRY
