"""Readiness fixtures: the demo-like workspace is built once per session and each test gets a
copy of its own (so breaking one thing never leaks into another test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from readiness_testkit import Built, build, copy_of

from shipyard.workspace import Workspace


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build(tmp_path_factory.mktemp("demo-like") / "home")


@pytest.fixture
def demo_ws(built: Built, tmp_path: Path) -> Iterator[Workspace]:
    ws = copy_of(built, tmp_path / "demo-home")
    yield ws
    ws.store.dispose()
