"""Settings from defaults, shipyard.toml and the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.config import load_settings
from shipyard.errors import ConfigError


def test_defaults_put_everything_in_the_home(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "h")
    assert settings.database_url == f"sqlite:///{tmp_path / 'h' / 'shipyard.db'}"
    assert settings.artifact_url == str(tmp_path / "h" / "artifacts")


def test_environment_overrides_the_toml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shipyard.toml").write_text(
        'artifact_root = "memory://x"\n[serving]\nport = 9000\n'
    )
    monkeypatch.setenv("SHIPYARD_SERVING__PORT", "9100")
    settings = load_settings()
    assert settings.artifact_url == "memory://x"
    assert settings.serving.port == 9100


def test_a_broken_toml_file_is_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / "shipyard.toml").write_text("db_url = \n")
    with pytest.raises(ConfigError, match=r"shipyard\.toml is not valid TOML"):
        load_settings()


def test_a_wrong_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPYARD_SERVING__PORT", "eighty")
    with pytest.raises(ConfigError, match=r"serving\.port"):
        load_settings()


def test_an_unknown_setting_is_refused(tmp_path: Path) -> None:
    (tmp_path / "shipyard.toml").write_text('databse_url = "sqlite:///x"\n')
    with pytest.raises(ConfigError, match="databse_url"):
        load_settings()


def test_a_missing_explicit_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPYARD_CONFIG", "/nonexistent/shipyard.toml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()
