"""``/pipelines``: the pipelines Shipyard has seen (registered on their first run)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from shipyard.api.operations import Context, PageQuery, operation, page
from shipyard.identity import READ

PIPELINE = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$"
"""A pipeline's name as a role's scope can name it (``pipeline:NAME``)."""


class PipelinesQuery(PageQuery):
    cursor: str | None = Field(
        None, pattern=PIPELINE, description="The `next` of the previous page (a pipeline name)."
    )


@operation("GET", "/pipelines", name="pipelines.list")
def list_pipelines(ctx: Context, *, query: PipelinesQuery) -> dict[str, Any]:
    """Pipelines by name, each with its latest run."""
    from shipyard.pipelines.listing import pipelines_page

    ctx.require(READ)
    found = pipelines_page(ctx.ws.store, cursor=query.cursor, limit=query.limit)
    return page(found.items, found.next_cursor)


@operation("GET", "/pipelines/{name}", name="pipelines.show")
def show_pipeline(ctx: Context, *, name: str) -> dict[str, Any]:
    """A pipeline: its file, kind and schedule, its steps (upstream, declared resources,
    retries, timeout), its runs counted by status and its ten latest runs."""
    from shipyard.pipelines.listing import pipeline_detail

    ctx.require(READ)
    return pipeline_detail(ctx.ws.store, name)
