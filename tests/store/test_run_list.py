"""The run list read on the driver alone (``store.run_list``) is the control plane's run list
(``pipelines.listing.runs_page``) on the same database, and it reads only a database it may
read as it is."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.errors import NotFound
from shipyard.pipelines import listing
from shipyard.store import Store, run_list
from shipyard.store.tables import Run

from runs_testkit import fill  # isort: skip


@pytest.fixture
def filled(tmp_path: Path, migrated_sqlite: Callable[[Path], str]) -> Iterator[tuple[Store, Path]]:
    path = tmp_path / "home" / "shipyard.db"
    store = Store(migrated_sqlite(path))
    fill(store)
    yield store, path
    store.dispose()


def _every_page(read: Callable[..., Any], limit: int, **filters: Any) -> list[Any]:
    pages, after = [], None
    while True:
        page = read(after=after, limit=limit, **filters)
        pages.append((page.items, page.next_key))
        if page.next_key is None:
            return pages
        after = page.next_key


FILTERS = [
    {},
    {"pipeline": "etl"},
    {"status": "failed"},
    {"kind": "training", "status": "running"},
    {"since": 1_700_000_000.0 + 3 * 60.25},
    {"pipeline": "train", "since": 1_700_000_000.0 + 60.25, "status": "succeeded"},
    {"pipeline": "etl", "kind": "training"},  # matches nothing, names a known pipeline
]


class TestTheSamePagesAsTheControlPlane:
    @pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f) or "all")
    @pytest.mark.parametrize("limit", [1, 3, 20, 1000])
    def test_every_page_and_key_are_runs_pages(
        self, filled: tuple[Store, Path], filters: dict[str, Any], limit: int
    ) -> None:
        store, path = filled
        conn = run_list.connect(path)
        assert conn is not None
        try:
            lean = _every_page(lambda **q: run_list.runs_page(conn, **q), limit, **filters)
        finally:
            conn.close()
        full = _every_page(lambda **q: listing.runs_page(store, **q), limit, **filters)
        assert lean == full
        assert sum(len(items) for items, _ in lean) > 0 or filters.get("kind") == "training"

    def test_an_unknown_pipeline_is_the_same_error_with_the_same_suggestions(
        self, filled: tuple[Store, Path]
    ) -> None:
        store, path = filled
        with pytest.raises(NotFound) as full:
            listing.runs_page(store, pipeline="etk")
        conn = run_list.connect(path)
        assert conn is not None
        with pytest.raises(NotFound) as lean:
            run_list.runs_page(conn, pipeline="etk")
        conn.close()
        assert str(lean.value) == str(full.value) == "no pipeline named 'etk'; did you mean 'etl'?"

    def test_the_columns_read_are_the_tables_and_the_control_planes(self) -> None:
        """A column renamed or added to the control plane's page fails here, not in a user's
        terminal."""
        assert set(run_list.COLUMNS) <= set(Run.__table__.columns.keys())
        assert tuple(c.key for c in listing._SUMMARY_COLUMNS) == run_list.COLUMNS

    def test_the_run_summary_is_the_one_both_paths_share(self) -> None:
        from shipyard.pipelines import records

        assert records.run_summary is run_list.run_summary


class TestOnlyADatabaseItMayRead:
    """Anything else is the full path's to open: it creates, migrates or refuses it."""

    def test_a_missing_file_is_not_created(self, tmp_path: Path) -> None:
        assert run_list.connect(tmp_path / "none.db") is None
        assert not (tmp_path / "none.db").exists()

    def test_a_damaged_file(self, tmp_path: Path) -> None:
        path = tmp_path / "bad.db"
        path.write_bytes(b"this is no db!!\0" + b"\0" * 4080)
        assert run_list.connect(path) is None

    def test_a_database_never_migrated(self, tmp_path: Path) -> None:
        path = tmp_path / "plain.db"
        sqlite3.connect(path).close()
        assert run_list.connect(path) is None

    @pytest.mark.parametrize("revision", ["ffffffffffff", None], ids=["ahead", "behind"])
    def test_a_database_at_another_revision(
        self, filled: tuple[Store, Path], revision: str | None
    ) -> None:
        store, path = filled
        store.dispose()
        with sqlite3.connect(path) as conn:
            if revision is None:
                conn.execute("DELETE FROM alembic_version")
            else:
                conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))
        conn.close()
        assert run_list.connect(path) is None

    def test_a_database_not_in_wal_mode(self, filled: tuple[Store, Path]) -> None:
        store, path = filled
        store.dispose()
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.close()
        assert run_list.connect(path) is None

    def test_a_current_database_is_read_and_never_written(self, filled: tuple[Store, Path]) -> None:
        _, path = filled
        conn = run_list.connect(path)
        assert conn is not None
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("DELETE FROM runs")
        conn.close()
