"""``/metrics/matrix``: every series of one metric whose labels include the given ones, each
cut into the same time buckets, in one read. What a chart of many series needs (drift per
feature over time, latency quantiles per version, a pool's use per resource) without a request
per series or knowing the label sets beforehand (``/metrics/series`` reads one named series).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from shipyard.api.operations import Context, operation
from shipyard.api.ops.monitors import DAY_S, LabelPair, SeriesRange
from shipyard.errors import InvalidInput
from shipyard.identity import READ

MATCHED_PER_QUERY = 500
"""Series read per query (an SQL IN list of their keys)."""


class MatrixQuery(SeriesRange):
    label: list[LabelPair] = Field(
        default_factory=list,
        max_length=20,
        description="Labels every series must have, each key=value (repeat it); others may vary.",
    )
    buckets: int = Field(48, ge=1, le=500, description="Equal time buckets of the range.")
    max_series: int = Field(200, ge=1, le=1000, description="At most this many series.")


def _labels(pairs: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key in labels:
            raise InvalidInput(f"query.label: {key} is given twice")
        labels[key] = value
    return labels


@operation("GET", "/metrics/matrix", name="series.matrix")
def matrix(ctx: Context, *, query: MatrixQuery) -> dict[str, Any]:
    """Each series of a metric whose labels include `label`, in `buckets` equal time buckets
    of [since, until]: per bucket the mean of its points (null where it has none), and per
    series the number of points. Series are ordered by their labels; `truncated` says whether
    more than `max_series` matched."""
    from sqlalchemy import Integer, cast, func, select

    from shipyard.store.tables import MetricPoint

    ctx.require(READ)
    wanted = _labels(query.label)
    until = query.until if query.until is not None else ctx.now
    since = query.since if query.since is not None else max(until - DAY_S, 0.0)
    if not since < until:
        raise InvalidInput("query.since: must be before query.until")
    step_s = (until - since) / query.buckets
    points = MetricPoint.__table__
    with ctx.ws.store.session(readonly=True) as s:
        # the metric's label sets by a skip-scan of the series index: one seek per series,
        # however many points each holds
        first = select(func.min(points.c.labels_key).label("key")).where(
            points.c.name == query.name
        )
        keys = first.cte("series_keys", recursive=True)
        following = (
            select(func.min(points.c.labels_key))
            .where(points.c.name == query.name, points.c.labels_key > keys.c.key)
            .scalar_subquery()
        )
        keys = keys.union_all(select(following).where(keys.c.key.is_not(None)))
        matched: list[tuple[str, dict[str, str]]] = []
        for key in s.scalars(select(keys.c.key).where(keys.c.key.is_not(None))):
            labels = dict(pair.split("=", 1) for pair in key.split(",") if "=" in pair)
            if all(labels.get(k) == v for k, v in wanted.items()):
                matched.append((key, labels))
        rows: list[Any] = []
        postgres = s.get_bind().dialect.name == "postgresql"
        offset = (MetricPoint.ts - since) / step_s
        bucket = cast(func.floor(offset), Integer) if postgres else cast(offset, Integer)
        for part in range(0, len(matched), MATCHED_PER_QUERY):
            some = [key for key, _ in matched[part : part + MATCHED_PER_QUERY]]
            per_bucket = (
                select(MetricPoint.labels_key, bucket, func.count(), func.avg(MetricPoint.value))
                .where(
                    MetricPoint.name == query.name,
                    MetricPoint.labels_key.in_(some),
                    MetricPoint.ts >= since,
                    MetricPoint.ts <= until,
                )
                .group_by(MetricPoint.labels_key, bucket)
            )
            rows += s.connection().execute(per_bucket).all()  # Core rows: no ORM per row
    present = {key for key, *_ in rows}
    matched = [(key, labels) for key, labels in matched if key in present]
    chosen = matched[: query.max_series]
    index = {key: i for i, (key, _) in enumerate(chosen)}
    values: list[list[float | None]] = [[None] * query.buckets for _ in chosen]
    counts = [0] * len(chosen)
    for key, b, count, mean in rows:
        i = index.get(key)
        if i is None:
            continue
        slot = min(int(b), query.buckets - 1)
        values[i][slot] = float(mean) if mean is not None and mean == mean else None
        counts[i] += int(count)
    return {
        "name": query.name,
        "labels": wanted,
        "since": since,
        "until": until,
        "step_s": step_s,
        "ts": [since + b * step_s for b in range(query.buckets)],
        "series": [
            {"labels": labels, "points": counts[i], "values": values[i]}
            for i, (_, labels) in enumerate(chosen)
        ],
        "truncated": len(matched) > query.max_series,
    }
