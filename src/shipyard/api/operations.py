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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any, TypeVar, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shipyard.api.cursors import CURSOR_MAX, KeyPart, decode_cursor, encode_cursor
from shipyard.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from sqlalchemy import Select
    from sqlalchemy.orm import QueryableAttribute
    from sqlalchemy.sql import ColumnElement

    Column = ColumnElement[Any] | QueryableAttribute[Any]

    from shipyard.identity import Principal
    from shipyard.workspace import Workspace

T = TypeVar("T")
_PATH_PARAM = re.compile(r"\{([a-z_]+)\}")
_NAME = re.compile(r"^[a-z_]+(\.[a-z_]+)+$")


class Params(BaseModel):
    """Base of every query and body model: unknown fields are refused, naming them.

    Each model builds its validator when it first validates (``defer_build``), not when its
    module is imported: a command runs one operation of a module that declares several."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class PageQuery(Params):
    """Pagination of a list: at most ``limit`` items from ``cursor`` (the ``next`` of the page
    before; absent for the first page)."""

    limit: int = Field(50, ge=1, le=1000, description="How many items at most.")
    cursor: str | None = Field(
        None, max_length=CURSOR_MAX, description="The `next` of the previous page."
    )


def page(items: list[Any], next_cursor: str | None, **extra: Any) -> dict[str, Any]:
    """The shape of every list: ``{"items": [...], "next": cursor or null, ...}``."""
    return {"items": items, "next": next_cursor, **extra}


# -- pages -----------------------------------------------------------------------------------


def next_cursor(
    listing: str, rows: Sequence[T], limit: int, key: Callable[[T], tuple[KeyPart, ...]]
) -> str | None:
    """The ``next`` of a page read as ``limit + 1`` rows: the cursor after row ``limit`` when
    there was one more, else ``None`` (the last page)."""
    if len(rows) <= limit:
        return None
    return encode_cursor(listing, *key(rows[limit - 1]))


def slice_page(listing: str, items: list[Any], query: PageQuery, **extra: Any) -> dict[str, Any]:
    """A page of a list held whole in memory (a few hundred items at most: identities, tokens,
    rules, receivers), by position."""
    (start,) = decode_cursor(listing, query.cursor, int) or (0,)
    end = start + query.limit
    more = end < len(items)
    return page(items[start:end], encode_cursor(listing, end) if more else None, **extra)


def keyset_page(
    ctx: Context,
    listing: str,
    statement: Select[Any],
    order: tuple[QueryableAttribute[Any], QueryableAttribute[Any]],
    query: PageQuery,
    item: Callable[[Any], Any],
) -> dict[str, Any]:
    """A page of the rows ``statement`` selects, ascending by the two columns ``order`` (a time,
    then an id), from after ``query.cursor``; ``item`` turns each row into its JSON."""
    after = decode_cursor(listing, query.cursor, float, str)
    if after is not None:
        statement = statement.where(after_key(order, after))
    statement = statement.order_by(*order).limit(query.limit + 1)
    with ctx.ws.store.session() as session:
        rows = list(session.scalars(statement))
        items = [item(r) for r in rows[: query.limit]]
        following = next_cursor(
            listing, rows, query.limit, lambda r: tuple(getattr(r, c.key) for c in order)
        )
    return page(items, following)


def after_key(
    columns: tuple[Column, Column],
    key: tuple[Any, Any],
    *,
    descending: bool = False,
) -> ColumnElement[bool]:
    """The rows after ``key`` in the order ``columns`` (ascending, or ``descending``): the
    keyset condition of a page, ``a > x OR (a = x AND b > y)``, which an index on the two
    columns answers."""
    from sqlalchemy import and_, or_

    (first, second), (at, last) = columns, key
    if descending:
        return or_(first < at, and_(first == at, second < last))
    return or_(first > at, and_(first == at, second > last))


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
    # The server serves them all: each model is built now and defers no more (FastAPI's
    # adapters over a model that defers its build would defer theirs to the first request).
    models: list[type[Params]] = [Params]
    while models:
        model = models.pop()
        models.extend(model.__subclasses__())
        if model.model_config.get("defer_build"):
            model.model_config["defer_build"] = False
            model.model_rebuild(force=True)
    return REGISTRY
