"""``config.location.plain_home``: the home without Pydantic, only when the settings are the
defaults but for the home and the user, and then the home and database the settings name."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.config import load_settings
from shipyard.config.location import DEFAULT_HOME, default_database_url, plain_home


@pytest.fixture(autouse=True)
def _no_other_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHIPYARD_TEST_POSTGRES_URL", raising=False)


class TestTheSameHomeAsTheSettings:
    @pytest.mark.parametrize("value", ["", "rel/work", "/abs/work", " spaced "])
    def test_from_the_environment(self, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
        monkeypatch.setenv("SHIPYARD_HOME", value)
        home = plain_home()
        settings = load_settings()
        assert home is not None and home == settings.home
        assert default_database_url(home) == settings.database_url

    def test_by_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("SHIPYARD_HOME")
        monkeypatch.delenv("SHIPYARD_USER")
        assert plain_home() == DEFAULT_HOME == load_settings().home

    def test_a_variable_in_lower_case_is_the_same_variable(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("SHIPYARD_HOME")
        monkeypatch.setenv("shipyard_home", "lower")
        assert plain_home() == Path("lower") == load_settings().home

    def test_the_servers_variables_are_no_settings(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("SHIPYARD_URL", "")
        monkeypatch.setenv("SHIPYARD_TOKEN", "t")
        assert plain_home() == load_settings().home


class TestAnythingElseIsForTheSettings:
    @pytest.mark.parametrize(
        "name",
        [
            "SHIPYARD_DB_URL",
            "SHIPYARD_ARTIFACT_ROOT",
            "SHIPYARD_SERVING__PORT",
            "SHIPYARD_CONFIG",
            "SHIPYARD_SOMETHING_ELSE",
            "shipyard_home",  # the home given twice
        ],
    )
    def test_a_variable(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        monkeypatch.setenv(name, "x")
        assert plain_home() is None

    def test_a_toml_file(self, tmp_path: Path) -> None:
        (tmp_path / "shipyard.toml").write_text('home = "elsewhere"\n')
        assert plain_home() is None
        assert load_settings().home == Path(str(tmp_path / "home"))  # the environment wins
