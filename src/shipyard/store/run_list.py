"""The run list read on the database driver alone (``sqlite3``), for ``shipyard runs list``.

Importing SQLAlchemy takes about twice as long as importing Typer, so a command that lists runs
through it cannot start within 3× a bare Typer import (issue 12). This module answers the list the
control plane's ``runs.list`` answers (:func:`shipyard.pipelines.listing.runs_page`: the same
filters, order, keyset and unknown-pipeline error; ``tests/store/test_run_list.py`` runs both
on one database) with the SQL below, the only SQL of this path, on the workspace's default
SQLite file.

It answers only a database it can read as it is: :func:`connect` gives ``None`` for a file that
is missing, damaged, not in WAL mode, or at another schema revision than this Shipyard's newest
(behind, ahead, or never migrated), and :func:`runs_page` gives ``None`` when the driver fails
mid-read. The caller then opens the workspace the full way (:class:`~shipyard.store.Store`),
which creates, migrates, or refuses the database with its one-line error, as it always has.

Reading is a deferred transaction with ``PRAGMA query_only``: a reader of a WAL database sees a
snapshot and never waits for writers.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

from shipyard.errors import NotFound
from shipyard.store.revisions import VERSION_TABLE, script_heads

if TYPE_CHECKING:
    from shipyard.store.tables import Run

BUSY_TIMEOUT_S = 30.0
"""How long a read waits for a lock, as :class:`~shipyard.store.Store` waits by default."""


class RunRow(NamedTuple):
    """The columns of ``runs`` that the run list shows (``params`` decoded from its JSON)."""

    id: str
    pipeline: str
    kind: str
    status: str
    params: Any
    executor: str
    created_by: str
    created_at: float
    started_at: float | None
    ended_at: float | None
    exit_reason: str | None


COLUMNS = RunRow._fields
"""The ``runs`` columns read, by name (``tests/store/test_run_list.py`` checks them against
the table and against what :func:`~shipyard.pipelines.listing.runs_page` selects)."""


def run_summary(run: RunRow | Run) -> dict[str, Any]:
    """A run as every list of runs shows it (the API's JSON): its columns of :data:`COLUMNS`
    but ``created_at``, and its duration; from a row of :func:`runs_page` or an ORM ``Run``."""
    return {
        "id": run.id,
        "pipeline": run.pipeline,
        "kind": run.kind,
        "status": run.status,
        "params": run.params,
        "executor": run.executor,
        "created_by": run.created_by,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "duration_s": (run.ended_at - run.started_at) if run.ended_at and run.started_at else None,
        "exit_reason": run.exit_reason,
    }


@dataclass(frozen=True)
class RunsPage:
    """A page of runs, and the ``(created_at, id)`` of its last run when a page follows."""

    items: list[dict[str, Any]]
    next_key: tuple[float, str] | None


def connect(path: Path) -> sqlite3.Connection | None:
    """A connection to the SQLite database at ``path`` that only reads, when the database is
    one this path may read (see the module); ``None`` otherwise, having changed nothing."""
    uri = f"file:{quote(str(path.resolve()))}?mode=rw"  # never creates the file
    try:
        conn = sqlite3.connect(
            uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error:
        return None
    try:
        conn.execute("PRAGMA query_only=ON")
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        revisions = {r for (r,) in conn.execute(f"SELECT version_num FROM {VERSION_TABLE}")}
    except sqlite3.Error:
        conn.close()
        return None
    if mode != "wal" or not revisions or revisions != script_heads():
        conn.close()
        return None
    return conn


def runs_page(
    conn: sqlite3.Connection,
    *,
    pipeline: str | None = None,
    status: str | None = None,
    kind: str | None = None,
    since: float | None = None,
    after: tuple[float, str] | None = None,
    limit: int = 50,
) -> RunsPage | None:
    """Runs newest first (``created_at``, then id), filtered, from after the run whose
    ``(created_at, id)`` is ``after``: :func:`~shipyard.pipelines.listing.runs_page`'s page.
    An unknown ``pipeline`` with no runs is :class:`~shipyard.errors.NotFound`, with
    suggestions; ``None`` when the driver fails (the caller takes the full path)."""
    where: list[str] = []
    args: list[Any] = []
    for column, value in (("pipeline", pipeline), ("status", status), ("kind", kind)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if since is not None:
        where.append("created_at >= ?")
        args.append(since)
    if after is not None:
        at, last_id = after
        # the first term lets the index on created_at bound the scan; the second is the keyset
        where.append("created_at <= ? AND (created_at < ? OR (created_at = ? AND id < ?))")
        args += [at, at, at, last_id]
    sql = (
        f"SELECT {', '.join(COLUMNS)} FROM runs"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + " ORDER BY created_at DESC, id DESC LIMIT ?"
    )
    try:
        conn.execute("BEGIN")
        try:
            rows = [_run_row(r) for r in conn.execute(sql, (*args, limit + 1))]
            known: list[str] | None = None
            if not rows and pipeline is not None:
                names = [n for (n,) in conn.execute("SELECT name FROM pipelines ORDER BY name")]
                known = None if pipeline in names else names
        finally:
            conn.execute("COMMIT")
    except sqlite3.Error:
        return None
    if known is not None:
        raise NotFound("pipeline", pipeline, candidates=known)
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more and rows else None
    return RunsPage(
        [run_summary(r) for r in rows], (last.created_at, last.id) if last is not None else None
    )


def _run_row(values: tuple[Any, ...]) -> RunRow:
    row = RunRow(*values)
    return row._replace(params=json.loads(row.params)) if row.params is not None else row
