"""``/monitors``, ``/findings`` and ``/metrics/series``: what the monitors of pipelines and
served models said, with their evidence, and the metric series they wrote.

Running the serving monitors now (``shipyard monitors serving``) is not here: it probes the
model servers the command's machine can reach, so it works on the workspace directly.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints

from shipyard.api.operations import (
    Context,
    PageQuery,
    Params,
    decode_cursor,
    encode_cursor,
    operation,
    page,
)
from shipyard.errors import InvalidInput
from shipyard.identity import READ
from shipyard.statuses import CheckStatus

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$"
LABEL = r"^[A-Za-z_][A-Za-z0-9_]{0,99}=.{0,200}$"
LabelPair = Annotated[str, StringConstraints(pattern=LABEL, max_length=301)]
DAY_S = 86400.0
EPOCH_MAX = 1e11


class FindingsQuery(PageQuery):
    pipeline: str | None = Field(None, pattern=NAME, description="Only this pipeline's findings.")
    dataset: str | None = Field(
        None, max_length=200, description="Only this data set's (of `pipeline`, or of any)."
    )
    model: str | None = Field(None, pattern=NAME, description="Only this served model's.")
    version: int | None = Field(None, ge=1, le=2**31 - 1, description="Only this version's.")
    monitor: str | None = Field(None, max_length=100, description="Only this monitor's.")
    status: CheckStatus | None = Field(None, description="Only findings with this status.")
    run_id: str | None = Field(None, max_length=32, description="Only this run's.")
    since: float | None = Field(None, ge=0, le=EPOCH_MAX, description="Only since (epoch s).")


class SeriesRange(Params):
    """A metric and a time range: what every series query starts from."""

    name: str = Field(..., min_length=1, max_length=200, description="The metric's name.")
    since: float | None = Field(
        None, ge=0, le=EPOCH_MAX, description="From (epoch s; default: a day before `until`)."
    )
    until: float | None = Field(None, ge=0, le=EPOCH_MAX, description="To (epoch s; default now).")


class SeriesQuery(SeriesRange):
    label: list[LabelPair] = Field(
        default_factory=list,
        max_length=20,
        description="The series' labels, each key=value (repeat it); exactly these labels.",
    )
    max_points: int = Field(
        500, ge=1, le=5000, description="At most this many points; more are bucketed."
    )


@operation("GET", "/monitors", name="monitors.list")
def list_monitors(ctx: Context, *, query: PageQuery) -> dict[str, Any]:
    """Each pipeline's monitors, on or off, with their options and the last verdict of each
    (per data set).

    Paged by pipeline name: `cursor` is the `next` of the previous page."""
    from shipyard.monitoring.history import monitors_page

    ctx.require(READ)
    after = decode_cursor("monitors.list", query.cursor, str)
    rows, more = monitors_page(ctx.ws.store, after[0] if after else None, query.limit)
    return page(rows, encode_cursor("monitors.list", rows[-1]["pipeline"]) if more else None)


@operation("GET", "/monitors/{pipeline}", name="monitors.get")
def get_monitors(ctx: Context, *, pipeline: str) -> dict[str, Any]:
    """One pipeline's monitors with their options and the last verdict per data set."""
    from shipyard.monitoring.history import pipeline_monitors

    ctx.require(READ)
    return pipeline_monitors(ctx.ws.store, pipeline)


@operation("GET", "/findings", name="monitors.findings")
def list_findings(ctx: Context, *, query: FindingsQuery) -> dict[str, Any]:
    """The monitors' findings, newest first, without their evidence (one finding's page has
    it): of a pipeline, a data set, a served model or version, a monitor, a status, a run,
    since a time.

    Paged: `cursor` is the `next` of the previous page."""
    from shipyard.monitoring.history import (
        FindingFilter,
        findings_page,
        require_pipeline,
    )
    from shipyard.registry import require_model_in

    ctx.require(READ)
    if query.pipeline is not None:  # a misspelt name is told, not answered with nothing
        require_pipeline(ctx.ws.store, query.pipeline)
    if query.model is not None:
        with ctx.ws.store.session(readonly=True) as s:
            require_model_in(s, query.model)
    which = FindingFilter(
        pipeline=query.pipeline,
        dataset=query.dataset,
        model=query.model,
        version=query.version,
        monitor=query.monitor,
        status=query.status.value if query.status is not None else None,
        run_id=query.run_id,
        since=query.since,
    )
    after = decode_cursor("monitors.findings", query.cursor, float, int)
    with ctx.ws.store.session(readonly=True) as s:
        items, following = findings_page(s, which, after, query.limit)
    return page(items, encode_cursor("monitors.findings", *following) if following else None)


@operation("GET", "/findings/{finding_id}", name="monitors.finding")
def get_finding(ctx: Context, *, finding_id: str) -> dict[str, Any]:
    """One finding with the evidence behind its verdict."""
    from shipyard.monitoring.history import finding

    ctx.require(READ)
    if not finding_id.isdigit() or len(finding_id) > 18:
        raise InvalidInput(f"finding_id {finding_id!r}: a finding's number")
    with ctx.ws.store.session(readonly=True) as s:
        return finding(s, int(finding_id))


@operation("GET", "/metrics/series", name="monitors.series")
def metric_series(ctx: Context, *, query: SeriesQuery) -> dict[str, Any]:
    """One metric series (a name and exactly its labels) over a time range, in at most
    `max_points` points: the raw points when the range holds no more, else equal time buckets
    each with the mean, min, max and count of its values."""
    from shipyard.monitoring.history import metric_series as series

    ctx.require(READ)
    labels: dict[str, str] = {}
    for pair in query.label:
        key, _, value = pair.partition("=")
        if key in labels:
            raise InvalidInput(f"query.label: {key} is given twice")
        labels[key] = value
    until = query.until if query.until is not None else ctx.now
    since = query.since if query.since is not None else max(until - DAY_S, 0.0)
    with ctx.ws.store.session(readonly=True) as s:
        return series(s, query.name, labels, since, until, query.max_points)
