"""``/pipelines``: the pipelines Shipyard has seen (registered on their first run)."""

from __future__ import annotations

from typing import Any

from shipyard.api.operations import (
    Context,
    PageQuery,
    decode_cursor,
    encode_cursor,
    operation,
    page,
)
from shipyard.identity import READ

PIPELINE = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$"
"""A pipeline's name as a role's scope can name it (``pipeline:NAME``)."""


@operation("GET", "/pipelines", name="pipelines.list")
def list_pipelines(ctx: Context, *, query: PageQuery) -> dict[str, Any]:
    """Pipelines by name, each with its latest run."""
    from shipyard.pipelines.listing import pipelines_page

    ctx.require(READ)
    after = decode_cursor("pipelines.list", query.cursor, str)
    found = pipelines_page(ctx.ws.store, after=after[0] if after else None, limit=query.limit)
    following = found.next_key
    return page(found.items, encode_cursor("pipelines.list", *following) if following else None)


@operation("GET", "/pipelines/{name}", name="pipelines.show")
def show_pipeline(ctx: Context, *, name: str) -> dict[str, Any]:
    """A pipeline: its file, kind and schedule, its steps (upstream, declared resources,
    retries, timeout), its runs counted by status and its ten latest runs."""
    from shipyard.pipelines.listing import pipeline_detail

    ctx.require(READ)
    return pipeline_detail(ctx.ws.store, name)
