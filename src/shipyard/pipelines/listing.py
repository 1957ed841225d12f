"""The read side of runs and pipelines for the control plane: pages that stay fast however many
runs there are, and a step's log read in pages of bounded size.

Runs are paged by a keyset, ``(created_at, id)`` of the last run of a page, never by an
offset: the next page starts at the index position of that run (``runs.created_at`` is indexed),
so page 200 costs what page 1 costs. Pipelines are paged by name the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sqlalchemy import and_, func, or_, select

from shipyard.errors import NotFound
from shipyard.pipelines.logs import parse_line
from shipyard.pipelines.records import run_summary
from shipyard.store import Store
from shipyard.store.tables import PipelineRecord, Run

LOG_PAGE_MAX_BYTES = 256 * 1024
"""The most bytes of a log one page reads; a line longer than this comes in pieces."""


@dataclass(frozen=True)
class Page:
    """Some rows, and the sort key of the last one when a page follows (``None`` on the last
    page): the control plane turns it into the page's cursor."""

    items: list[dict[str, Any]]
    next_key: tuple[Any, ...] | None


_SUMMARY_COLUMNS = (
    Run.id,
    Run.pipeline,
    Run.kind,
    Run.status,
    Run.params,
    Run.executor,
    Run.created_by,
    Run.created_at,
    Run.started_at,
    Run.ended_at,
    Run.exit_reason,
)
"""What :func:`~shipyard.pipelines.records.run_summary` reads of a run: selected as columns,
the rows carry the same attributes, and a page of 1,000 costs a third of loading ORM objects
(measured on SQLite: 68 ms against 208 ms, benchmarks/runs_api.py's data)."""


def runs_page(
    store: Store,
    *,
    pipeline: str | None = None,
    status: str | None = None,
    kind: str | None = None,
    since: float | None = None,
    after: tuple[float, str] | None = None,
    limit: int = 50,
) -> Page:
    """Runs newest first (``created_at``, then id), filtered, from after the run whose
    ``(created_at, id)`` is ``after``; the page's ``next_key`` is its last run's."""
    query = select(*_SUMMARY_COLUMNS)
    if pipeline is not None:
        query = query.where(Run.pipeline == pipeline)
    if status is not None:
        query = query.where(Run.status == status)
    if kind is not None:
        query = query.where(Run.kind == kind)
    if since is not None:
        query = query.where(Run.created_at >= since)
    if after is not None:
        at, last_id = after
        # the first term lets the index on created_at bound the scan; the second is the keyset
        query = query.where(
            Run.created_at <= at,
            or_(Run.created_at < at, and_(Run.created_at == at, Run.id < last_id)),
        )
    query = query.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit + 1)
    with store.session() as s:
        rows = list(s.execute(query))
        more = len(rows) > limit
        rows = rows[:limit]
        items = [run_summary(cast(Run, r)) for r in rows]
        if not rows and pipeline is not None and s.get(PipelineRecord, pipeline) is None:
            known = list(s.scalars(select(PipelineRecord.name).order_by(PipelineRecord.name)))
            raise NotFound("pipeline", pipeline, candidates=known)
    last = rows[-1] if more and rows else None
    return Page(items, (last.created_at, last.id) if last is not None else None)


def _pipeline_row(p: PipelineRecord, last: Any) -> dict[str, Any]:
    return {
        "name": p.name,
        "kind": p.kind,
        "file": p.file,
        "schedule": p.schedule,
        "steps": len((p.spec or {}).get("steps", {})),
        "last_run": last.id if last else None,
        "last_status": last.status if last else None,
        "last_started_at": last.started_at if last else None,
    }


def pipelines_page(store: Store, *, after: str | None = None, limit: int = 50) -> Page:
    """Pipelines seen so far by name, from after the name ``after`` (the last of a page), each
    with its latest run: the id of each one's newest run is one index seek per pipeline (on
    ``runs (pipeline, created_at)``), however many runs it has."""
    newest = (
        select(Run.id)
        .where(Run.pipeline == PipelineRecord.name)
        .order_by(Run.created_at.desc(), Run.id.desc())
        .limit(1)
        .correlate(PipelineRecord)
        .scalar_subquery()
    )
    query = select(PipelineRecord, newest).order_by(PipelineRecord.name).limit(limit + 1)
    if after is not None:
        query = query.where(PipelineRecord.name > after)
    with store.session(readonly=True) as s:
        records = s.execute(query).all()
        more = len(records) > limit
        records = records[:limit]
        ids = [run_id for _, run_id in records if run_id is not None]
        latest = {
            r.id: r
            for r in s.execute(
                select(Run.id, Run.status, Run.started_at).where(Run.id.in_(ids))
            ).all()
        }
        items = [_pipeline_row(p, latest.get(run_id)) for p, run_id in records]
    return Page(items, (records[-1][0].name,) if more and records else None)


def list_pipelines(store: Store) -> list[dict[str, Any]]:
    """Every pipeline seen so far, by name, with its latest run: :func:`pipelines_page` page
    after page."""
    items: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        found = pipelines_page(store, after=after, limit=1000)
        items += found.items
        if found.next_key is None:
            return items
        after = found.next_key[0]


def pipeline_detail(store: Store, name: str, recent: int = 10) -> dict[str, Any]:
    """A pipeline: where it is defined, its steps (upstream, declared resources, retries,
    timeout), its run counts by status and its ``recent`` latest runs."""
    with store.session() as s:
        p = s.get(PipelineRecord, name)
        if p is None:
            known = list(s.scalars(select(PipelineRecord.name).order_by(PipelineRecord.name)))
            raise NotFound("pipeline", name, "see `shipyard pipelines list`", candidates=known)
        runs = list(
            s.scalars(
                select(Run)
                .where(Run.pipeline == name)
                .order_by(Run.created_at.desc(), Run.id.desc())
                .limit(recent)
            )
        )
        counts = dict(
            s.execute(
                select(Run.status, func.count()).where(Run.pipeline == name).group_by(Run.status)
            ).all()
        )
        out = _pipeline_row(p, runs[0] if runs else None)
        spec = p.spec or {}
        out.update(
            {
                "updated_at": p.updated_at,
                "pool": spec.get("pool"),
                "params": spec.get("params", {}),
                "step_specs": spec.get("steps", {}),
                "runs_by_status": {str(k): int(v) for k, v in counts.items()},
                "recent_runs": [run_summary(r) for r in runs],
            }
        )
    return out


def step_usage(step: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """What a step used against what it declared: memory as peak RSS against declared bytes,
    CPU as mean cores (CPU seconds over wall seconds) against declared cores; ``ratio`` is
    used/declared (``None`` when either is unknown or nothing was declared)."""
    declared = step.get("resources") or {}
    duration_s = step.get("duration_s")
    cpu_s = step.get("cpu_seconds")
    used_cores = cpu_s / duration_s if cpu_s is not None and duration_s else None
    out: dict[str, dict[str, float | None]] = {}
    for name, used in (("memory", step.get("peak_rss_bytes")), ("cpu", used_cores)):
        want = declared.get(name)
        ratio = used / want if used is not None and want else None
        out[name] = {"declared": want, "used": used, "ratio": ratio}
    return out


@dataclass(frozen=True)
class LogPage:
    lines: list[dict[str, Any]]
    offset: int
    """The byte offset after the last line returned: where the next page starts."""
    more: bool
    """Whether the file held more complete lines than this page returned."""


def read_log_page(
    path: str | Path | None, offset: int, limit: int, max_bytes: int = LOG_PAGE_MAX_BYTES
) -> LogPage:
    """At most ``limit`` complete lines of the log at ``path`` from byte ``offset``, reading at
    most ``max_bytes``. A line still being written is left for a later page; a line longer
    than ``max_bytes`` comes as pieces of that size, so a page never reads more."""
    if path is None:
        return LogPage([], offset, False)
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        return LogPage([], offset, False)
    chunk = data[:max_bytes]
    lines: list[dict[str, Any]] = []
    used = 0
    while len(lines) < limit:
        end = chunk.find(b"\n", used)
        if end < 0:
            break
        lines.append(parse_line(chunk[used:end].decode("utf-8", errors="replace")))
        used = end + 1
    if not lines and used == 0 and len(data) > max_bytes:
        # one line longer than a page: hand it over in pieces rather than never
        lines.append(parse_line(chunk.decode("utf-8", errors="replace")))
        used = len(chunk)
    more = b"\n" in data[used:] or len(data) > max_bytes
    return LogPage(lines, offset + used, more)
