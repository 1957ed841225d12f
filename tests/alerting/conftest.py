"""Fixtures of the alerting tests: a real HTTP receiver and a SQLite store for timelines."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alerting_testkit import CollectingReceiver

from shipyard.store import Store


@pytest.fixture
def webhook() -> Iterator[CollectingReceiver]:
    receiver = CollectingReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def sqlite_store(tmp_path: Path, migrated_sqlite: Callable[[Path], str]) -> Iterator[Store]:
    """Timeline tests need one real database, not both: SQLite."""
    s = Store(migrated_sqlite(tmp_path / "timeline.db"))
    yield s
    s.dispose()
