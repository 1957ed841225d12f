"""``plane``: one live control plane per test module, on SQLite and then on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from apikit import POSTGRES_URL, Plane, plane_on

NO_POSTGRES = "SHIPYARD_TEST_POSTGRES_URL is not set: no PostgreSQL to test against"


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Plane]:
    if request.param == "postgresql" and not POSTGRES_URL:
        pytest.skip(NO_POSTGRES)
    with plane_on(request.param, tmp_path_factory.mktemp("plane")) as live:
        yield live
