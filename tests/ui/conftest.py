"""``seeded``: one live control plane per test module (SQLite), with something on every page
of the dashboard (:mod:`uikit`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for kit in (HERE.parent / "api", HERE.parent / "deploy"):  # apikit, deploy_testkit
    if str(kit) not in sys.path:
        sys.path.insert(0, str(kit))

from apikit import live_plane  # noqa: E402
from uikit import Seeded, seed  # noqa: E402


@pytest.fixture(scope="module")
def seeded(module_folder: Path) -> Iterator[Seeded]:
    with live_plane(f"sqlite:///{module_folder / 'store.db'}", module_folder) as plane:
        yield seed(plane, module_folder)
