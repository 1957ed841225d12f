"""A damaged database file (a corrupt header, a truncated file) is one line that says what is
wrong and how to recover, from the store and from every command, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from shipyard.cli import main
from shipyard.errors import StoreDamaged
from shipyard.store import Store
from shipyard.store.tables import AuditEvent

COMMANDS = [
    ["init"],
    ["runs", "list"],
    ["pipelines", "list"],
    ["models", "list"],
    ["quota", "status"],
    ["alerts", "list"],
    ["deployments", "history", "cancer"],
    ["deployments", "policy", "cancer"],
    ["rollback", "cancer"],
    ["monitors", "list"],
]


def _filled(path: Path) -> None:
    """A migrated database whose last pages hold audit rows, checkpointed into the main file."""
    store = Store(f"sqlite:///{path}")
    with store.session() as s:
        for i in range(400):
            s.add(
                AuditEvent(
                    ts=float(i),
                    actor="a",
                    action="x",
                    subject_kind="m",
                    subject_id=str(i),
                    detail={"pad": "x" * 500},
                )
            )
    store.dispose()  # the last connection closing checkpoints the WAL into the file
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0


def _corrupt_header(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.write(b"this is no db!!\0")  # the 16-byte magic string of every SQLite file


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size * 2 // 3)


DAMAGE: dict[str, Callable[[Path], None]] = {"header": _corrupt_header, "truncated": _truncate}


def _says_how_to_recover(message: str, path: Path) -> None:
    assert str(path) in message
    assert "damaged" in message
    assert f"sqlite3 {path} .recover" in message
    assert "back-up" in message and "aside" in message
    assert "\n" not in message.strip()


class TestTheStore:
    def test_a_corrupt_header_is_store_damaged_on_open(self, tmp_path: Path) -> None:
        path = tmp_path / "x.db"
        _filled(path)
        _corrupt_header(path)
        with pytest.raises(StoreDamaged) as caught:
            Store(f"sqlite:///{path}")
        assert caught.value.path == str(path)
        assert "file is not a database" in str(caught.value)
        _says_how_to_recover(str(caught.value), path)

    def test_a_truncated_file_is_store_damaged_when_its_lost_pages_are_read(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "x.db"
        _filled(path)
        _truncate(path)
        with pytest.raises(StoreDamaged) as caught:
            store = Store(f"sqlite:///{path}")  # the schema's pages come first and survive…
            try:
                with store.session(readonly=True) as s:  # …the audit rows at the end do not
                    s.scalar(select(func.sum(func.length(AuditEvent.detail))))
            finally:
                store.dispose()
        _says_how_to_recover(str(caught.value), path)


def _main(args: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    old = sys.argv
    sys.argv = ["shipyard", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = old
    return code, capfd.readouterr().err


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_every_command_says_the_database_is_damaged_in_one_line(
    damage: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "home" / "shipyard.db"
    path.parent.mkdir()
    _filled(path)
    DAMAGE[damage](path)
    for args in COMMANDS:
        code, err = _main(args, capfd)
        assert "Traceback" not in err, args
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 1 and len(lines) == 1, (args, err)
        assert lines[0].startswith("error: the metadata database"), (args, err)
        _says_how_to_recover(lines[0], path)


def test_a_real_process_prints_the_line_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "home" / "shipyard.db"
    path.parent.mkdir()
    _filled(path)
    _corrupt_header(path)
    out = subprocess.run(
        [sys.executable, "-m", "shipyard", "models", "list"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "is damaged (file is not a database)" in " ".join(out.stderr.split())
