"""``shipyard runs list`` on the workspace's SQLite file reads it on the driver alone
(``store.run_list``) and prints, byte for byte, what the ``runs.list`` operation's answer
prints; whatever that path may not read (a missing, damaged or foreign database, settings
beyond the home) goes the full way, with the full way's answer."""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from shipyard.cli.runs import runs_list
from shipyard.store import Store

from runs_testkit import fill  # isort: skip

WATCH = """
import atexit, json, os, sys
atexit.register(lambda: open(os.environ["MODULES_OUT"], "w").write(json.dumps(sorted(sys.modules))))
from shipyard.cli import main
main()
"""

FULL_WAY = {"SHIPYARD_SERVING__PORT": "8000"}
"""A setting beyond the home (the default port, so nothing else changes): the command reads the
settings with Pydantic and the runs through the operation, as it did before the direct read."""


def listing(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """``shipyard runs list ARGS`` as a real process on ``home``, with no Shipyard variable but
    the home, the user and ``env``; its result and the modules it had loaded at exit."""
    out_file = home.parent / "modules.json"
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("SHIPYARD_")}
    clean.update(SHIPYARD_HOME=str(home), SHIPYARD_USER="tester", COLUMNS="100")
    clean.update(MODULES_OUT=str(out_file), **(env or {}))
    done = subprocess.run(
        [sys.executable, "-c", WATCH, "runs", "list", *args],
        capture_output=True,
        text=True,
        cwd=home.parent,
        env=clean,
        timeout=60,
    )
    return done, set(json.loads(out_file.read_text()))


@pytest.fixture
def home(tmp_path: Path, migrated_sqlite: Callable[[Path], str]) -> Path:
    """A workspace holding 23 runs of two pipelines, of every status."""
    store = Store(migrated_sqlite(tmp_path / "home" / "shipyard.db"))
    fill(store)
    store.dispose()
    return tmp_path / "home"


class TestTheSameOutput:
    @pytest.mark.parametrize(
        "args",
        [
            (),
            ("--json", "--limit", "4"),
            ("--status", "failed", "--pipeline", "etl", "--limit", "3"),
            ("--pipeline", "etk"),
            ("--status", "bogus"),
        ],
        ids=["table", "json", "filtered", "unknown-pipeline", "bad-status"],
    )
    def test_byte_for_byte_what_the_operation_prints(
        self, home: Path, args: tuple[str, ...]
    ) -> None:
        direct, loaded = listing(home, *args)
        full, full_loaded = listing(home, *args, env=FULL_WAY)
        assert (direct.returncode, direct.stdout, direct.stderr) == (
            full.returncode,
            full.stdout,
            full.stderr,
        )
        assert "sqlalchemy" not in loaded and "sqlalchemy" in full_loaded
        if not args:
            assert direct.returncode == 0 and "older: shipyard runs list --cursor" in direct.stdout
            assert "pydantic" not in loaded

    def test_the_next_page_from_the_printed_cursor(self, home: Path) -> None:
        first, _ = listing(home, "--limit", "5")
        cursor = re.search(r"--cursor (\S+)", first.stdout)
        assert cursor is not None
        direct, loaded = listing(home, "--limit", "5", "--cursor", cursor.group(1))
        full, _ = listing(home, "--limit", "5", "--cursor", cursor.group(1), env=FULL_WAY)
        assert direct.returncode == 0 and direct.stdout == full.stdout
        assert "sqlalchemy" not in loaded
        assert not set(first.stdout.split()) & {w for w in direct.stdout.split() if len(w) == 12}

    def test_limit_has_the_operations_bounds_so_a_page_without_filters_needs_no_check(
        self,
    ) -> None:
        from shipyard.api.operations import PageQuery

        option = inspect.signature(runs_list).parameters["limit"].default
        bounds = {type(m).__name__: m for m in PageQuery.model_fields["limit"].metadata}
        assert (option.min, option.max) == (bounds["Ge"].ge, bounds["Le"].le)


def _damage(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.write(b"this is no db!!\0")


def _damage_the_runs_table(path: Path) -> None:
    """Garbage over the first page of ``runs``: the schema and its revision still read, the
    runs do not (the direct read fails mid-way, after it chose to read)."""
    import sqlite3

    conn = sqlite3.connect(path)
    (page,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()
    (size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    with open(path, "r+b") as fh:
        fh.seek((page - 1) * size)
        fh.write(b"\xff" * size)


def _from_a_newer_shipyard(path: Path) -> None:
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    conn.close()


class TestWhatItMayNotReadGoesTheFullWay:
    @pytest.mark.parametrize(
        ("change", "expected"),
        [
            (lambda h: shutil.rmtree(h), "no Shipyard workspace at"),
            (lambda h: (h / "shipyard.db").unlink(), "no runs yet"),
            (lambda h: _damage(h / "shipyard.db"), "is damaged"),
            (lambda h: _damage_the_runs_table(h / "shipyard.db"), "is damaged"),
            (lambda h: _from_a_newer_shipyard(h / "shipyard.db"), "made by a newer Shipyard"),
        ],
        ids=["no-home", "no-database", "damaged", "runs-damaged", "newer-schema"],
    )
    def test_as_before(
        self, home: Path, tmp_path: Path, change: Callable[[Path], None], expected: str
    ) -> None:
        twin = tmp_path / "twin" / "home"
        shutil.copytree(home, twin)
        change(home)
        change(twin)
        direct, _ = listing(home)
        full, _ = listing(twin, env=FULL_WAY)
        assert expected in direct.stdout + direct.stderr
        assert direct.returncode == full.returncode
        assert direct.stdout == full.stdout
        assert direct.stderr.replace(str(home), "HOME") == full.stderr.replace(str(twin), "HOME")
        assert "Traceback" not in direct.stderr
        if expected == "no runs yet":  # created and migrated, as opening a workspace does
            assert (home / "shipyard.db").is_file()


@pytest.mark.postgres
def test_on_postgresql_the_full_way_prints_what_the_direct_read_prints_on_sqlite(
    home: Path, tmp_path: Path, migrated_postgres_url: str
) -> None:
    """The direct read is SQLite's only: a PostgreSQL workspace (``SHIPYARD_DB_URL``) lists
    through the operation, and the same runs print the same."""
    store = Store(migrated_postgres_url)
    fill(store)
    store.dispose()
    pg_home = tmp_path / "pg" / "home"
    pg_home.mkdir(parents=True)
    for args in [(), ("--status", "failed", "--pipeline", "etl", "--limit", "3")]:
        direct, _ = listing(home, *args)
        full, loaded = listing(pg_home, *args, env={"SHIPYARD_DB_URL": migrated_postgres_url})
        assert full.returncode == 0, full.stderr[-2000:]
        assert full.stdout == direct.stdout
        assert "sqlalchemy" in loaded
